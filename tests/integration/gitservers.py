"""Real git servers on loopback for remote-hub tests: sshd with a key, nginx + fcgiwrap + git http-backend.

Every server runs as its own process with config, keys, pid and logs under a directory the
caller gives (tmp_path); listens on 127.0.0.1 only; :meth:`stop` ends exactly that process.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path


def binary(name: str) -> str:
    """Return the path of a system tool; fail (never skip) when it is missing."""
    found = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/local/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    assert found, f"{name} is not installed: bash scripts/system-deps.sh installs it"
    return found


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        time.sleep(0.05)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


class SshServer:
    """sshd on 127.0.0.1:PORT with its own host key and one authorized client key.

    ``env`` holds GIT_SSH_COMMAND for git clients: the client key, a known_hosts file with
    the server's host key (strict checking stays on) and no agent or user config.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        os.chmod(root, 0o700)
        self.port = _free_port()
        self.user = (
            os.environ.get("USER")
            or subprocess.run(
                ["id", "-un"], capture_output=True, text=True, check=True
            ).stdout.strip()
        )
        host_key, client_key = root / "host_ed25519", root / "client_ed25519"
        for key in (host_key, client_key):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "kbgit-test", "-f", str(key)],
                check=True,
            )
        (root / "authorized_keys").write_text(client_key.with_suffix(".pub").read_text())
        os.chmod(root / "authorized_keys", 0o600)
        host_pub = host_key.with_suffix(".pub").read_text().split()
        (root / "known_hosts").write_text(f"[127.0.0.1]:{self.port} {host_pub[0]} {host_pub[1]}\n")
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
        conf = root / "sshd_config"
        conf.write_text(
            f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
            f"PidFile {root / 'sshd.pid'}\nAuthorizedKeysFile {root / 'authorized_keys'}\n"
            "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPubkeyAuthentication yes\n"
            "PermitRootLogin prohibit-password\nUsePAM no\nStrictModes no\n"
            "AllowAgentForwarding no\nAllowTcpForwarding no\nX11Forwarding no\n"
            f"AllowUsers {self.user}\nSetEnv GIT_TERMINAL_PROMPT=0\n"
            # keep git's PATH: the session starts git-receive-pack and the hooks
            f"SetEnv PATH={os.environ.get('PATH', '/usr/bin:/bin')}\n"
        )
        check = subprocess.run(
            [binary("sshd"), "-t", "-f", str(conf)], capture_output=True, text=True
        )
        assert check.returncode == 0, check.stderr
        self.log = root / "sshd.log"
        self.proc = subprocess.Popen(
            [binary("sshd"), "-D", "-e", "-f", str(conf), "-E", str(self.log)]
        )
        _wait(lambda: self._alive() and _listening(self.port), 10, "sshd listening")
        self.ssh_command = (
            f"ssh -F /dev/null -i {client_key} -o IdentitiesOnly=yes -o BatchMode=yes "
            f"-o StrictHostKeyChecking=yes -o UserKnownHostsFile={root / 'known_hosts'}"
        )
        self.env = {"GIT_SSH_COMMAND": self.ssh_command}

    def _alive(self) -> bool:
        assert self.proc.poll() is None, self.log.read_text()[-3000:] if self.log.exists() else ""
        return True

    def url(self, path: Path) -> str:
        """Return the ssh:// URL of a repository path on this server."""
        return f"ssh://{self.user}@127.0.0.1:{self.port}{Path(path).resolve()}"

    def stop(self) -> None:
        """Stop sshd (its sessions end with it)."""
        _stop(self.proc)


def _ssha(password: str) -> str:
    salt = os.urandom(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


class HttpGitServer:
    """nginx + fcgiwrap + ``git http-backend`` serving ``project_root`` with basic auth.

    Reads and pushes both need the user and password; a push runs the repository's hooks.
    ``workers`` fcgiwrap processes run requests side by side (the fan-out bench uses more).
    With ``cpu_log``, each ``git http-backend`` runs under bash's ``time``, which appends
    "<user s> <system s>" of the request (with upload-pack and pack-objects, from
    getrusage, in ms) to that file.
    """

    def __init__(
        self,
        root: Path,
        project_root: Path,
        user: str = "kb",
        password: str = "",
        workers: int = 2,
        cpu_log: Path | None = None,
    ) -> None:
        self.root, self.project_root = root, Path(project_root).resolve()
        root.mkdir(parents=True, exist_ok=True)
        (root / "logs").mkdir(exist_ok=True)
        self.user, self.password = user, password or base64.b32encode(os.urandom(10)).decode()
        self.port = _free_port()
        sock = root / "fcgiwrap.sock"
        self.fcgi = subprocess.Popen(
            [binary("fcgiwrap"), "-c", str(workers), "-s", f"unix:{sock}"],
            start_new_session=True,  # its workers outlive a SIGTERM to the master: stop the group
            stdout=subprocess.DEVNULL,
            stderr=open(root / "fcgiwrap.log", "ab"),  # noqa: SIM115 - owned by the child
        )
        _wait(lambda: sock.exists(), 10, "fcgiwrap socket")
        os.chmod(sock, 0o666)  # nginx workers (not root) connect to it
        (root / "htpasswd").write_text(f"{self.user}:{_ssha(self.password)}\n")
        backend = next(
            p
            for p in (
                "/usr/lib/git-core/git-http-backend",
                "/usr/libexec/git-core/git-http-backend",
            )
            if os.access(p, os.X_OK)
        )
        if cpu_log is not None:
            backend = _timed(root, backend, cpu_log)
        conf = root / "nginx.conf"
        conf.write_text(
            _NGINX_CONF.format(
                root=root,
                port=self.port,
                sock=sock,
                backend=backend,
                user="user root;\n" if os.geteuid() == 0 else "",  # workers must read tmp_path
                project=self.project_root,
                path=os.environ.get("PATH", "/usr/bin:/bin"),
            )
        )
        base = [
            binary("nginx"),
            "-p",
            str(root),
            "-e",
            str(root / "logs" / "error.log"),
            "-c",
            str(conf),
        ]
        check = subprocess.run([*base, "-t"], capture_output=True, text=True)
        assert check.returncode == 0, check.stderr
        self.proc = subprocess.Popen(
            [*base, "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=open(root / "nginx.out", "ab"),  # noqa: SIM115 - owned by the child
        )
        _wait(lambda: self.proc.poll() is None and _listening(self.port), 10, "nginx listening")

    def url(self, repo: Path, *, with_password: bool = False) -> str:
        """Return the http:// URL of a repository under the project root."""
        rel = Path(repo).resolve().relative_to(self.project_root)
        cred = f"{self.user}:{self.password}@" if with_password else f"{self.user}@"
        return f"http://{cred}127.0.0.1:{self.port}/git/{rel}"

    def stop(self) -> None:
        """Stop nginx and fcgiwrap (its master and every worker)."""
        _stop(self.proc)
        with contextlib.suppress(ProcessLookupError):  # the master and its workers, together
            os.killpg(self.fcgi.pid, signal.SIGTERM)
        _stop(self.fcgi)


def _timed(root: Path, backend: str, cpu_log: Path) -> str:
    """Write a script that runs ``backend`` and appends its CPU seconds; return its path."""
    wrapper = root / "http-backend-timed"  # fcgiwrap runs SCRIPT_FILENAME without arguments
    wrapper.write_text(_TIMED.format(bash=binary("bash"), log=cpu_log, backend=backend))
    wrapper.chmod(0o755)
    return str(wrapper)


#: runs git http-backend (stdin, stdout, stderr untouched) and appends its CPU seconds
_TIMED = """#!{bash}
TIMEFORMAT='%3U %3S'
{{ time {backend} 2>&4 ; }} 4>&2 2>>"{log}"
"""

_NGINX_CONF = """\
{user}worker_processes 1;
pid {root}/nginx.pid;
events {{ worker_connections 256; }}
http {{
    access_log {root}/logs/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
    client_max_body_size 0;
    server {{
        listen 127.0.0.1:{port};
        location ~ ^/git(/.*)$ {{
            auth_basic "kbgit hub";
            auth_basic_user_file {root}/htpasswd;
            fastcgi_pass unix:{sock};
            fastcgi_buffering off;
            fastcgi_request_buffering off;
            fastcgi_read_timeout 300s;
            fastcgi_param SCRIPT_FILENAME {backend};
            fastcgi_param GIT_PROJECT_ROOT {project};
            fastcgi_param GIT_HTTP_EXPORT_ALL "";
            fastcgi_param PATH_INFO $1;
            fastcgi_param PATH {path};
            fastcgi_param REMOTE_USER $remote_user;
            fastcgi_param REMOTE_ADDR $remote_addr;
            fastcgi_param CONTENT_TYPE $content_type;
            fastcgi_param CONTENT_LENGTH $content_length;
            fastcgi_param QUERY_STRING $query_string;
            fastcgi_param REQUEST_METHOD $request_method;
            fastcgi_param GIT_CONFIG_NOSYSTEM 1;
        }}
    }}
}}
"""

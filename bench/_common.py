"""Shared helpers for the core-ingest benchmarks: corpus generator, timing, reporting.

Not a library module: benches print, and they import this file as ``_common`` from their
own directory (``python bench/bench_x.py`` puts ``bench/`` on ``sys.path``).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parent.parent

_SUBJECTS = [
    "the on-call engineer",
    "the backup job",
    "the VPN gateway",
    "the billing service",
    "the ingest worker",
    "the primary database",
    "the standby replica",
    "the load balancer",
    "the audit log shipper",
    "the certificate renewer",
    "the search cluster",
    "the build agent",
    "the payroll export",
    "the metrics pipeline",
    "the identity provider",
    "the mail relay",
    "the object store",
    "the scheduler",
    "the release manager",
    "the security team",
]
_VERBS = [
    "rotates",
    "verifies",
    "restores",
    "archives",
    "replicates",
    "throttles",
    "re-indexes",
    "escalates",
    "drains",
    "snapshots",
    "migrates",
    "revokes",
    "compresses",
    "audits",
    "provisions",
    "decommissions",
    "reconciles",
    "quarantines",
    "benchmarks",
    "patches",
]
_OBJECTS = [
    "the API keys",
    "every nightly snapshot",
    "the customer invoices",
    "the TLS certificates",
    "the stale sessions",
    "the message queue",
    "the firewall rules",
    "the cold storage tier",
    "the replication slots",
    "the DNS records",
    "the access tokens",
    "the incident timeline",
    "the retention policy",
    "the vendor contracts",
    "the disk quotas",
    "the kernel modules",
    "the password hashes",
    "the feature flags",
    "the cron schedules",
    "the routing tables",
]
_WHEN = [
    "before the quarterly review",
    "after each deployment",
    "whenever latency exceeds {n} ms",
    "every {n} days",
    "during the maintenance window on {day}",
    "within {n} minutes of an alert",
    "once the change ticket CHG-{id} is approved",
    "unless the region {region} is degraded",
    "at {h:02d}:{m:02d} UTC",
    "when more than {n} percent of requests fail",
]
_WHY = [
    "so that auditors can trace every change",
    "because the contract with {vendor} requires it",
    "to keep recovery under {n} minutes",
    "since the incident INC-{id} showed the gap",
    "which keeps the error budget above {n} percent",
    "as the {team} team agreed in review",
    "to avoid paging the {team} rotation twice",
    "so the standby never serves stale data",
]
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
_REGIONS = ["eu-west", "us-east", "ap-south", "eu-north", "us-west", "sa-east"]
_VENDORS = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark", "Wayne", "Wonka"]
_TEAMS = ["platform", "storage", "network", "payments", "identity", "data", "mobile", "sre"]
_TOPICS = ["runbooks", "policies", "faq", "architecture", "onboarding", "postmortems"]


def _fill(template: str, rng: random.Random) -> str:
    return template.format(
        n=rng.randint(2, 950),
        id=rng.randint(1000, 99999),
        day=rng.choice(_DAYS),
        region=rng.choice(_REGIONS),
        h=rng.randint(0, 23),
        m=rng.randint(0, 59),
        vendor=rng.choice(_VENDORS),
        team=rng.choice(_TEAMS),
    )


def paragraph(rng: random.Random, sentences: int = 5) -> str:
    """Return one paragraph of runbook-like prose, made distinct by its numbers and ids."""
    out = []
    for _ in range(sentences):
        s = (
            f"{rng.choice(_SUBJECTS)} {rng.choice(_VERBS)} {rng.choice(_OBJECTS)} "
            f"{_fill(rng.choice(_WHEN), rng)}, {_fill(rng.choice(_WHY), rng)}."
        )
        out.append(s[0].upper() + s[1:])
    return " ".join(out)


def write_corpus(
    root: Path, files: int, paras: int, *, seed: int = 0, start: int = 0, sentences: int = 5
) -> list[Path]:
    """Write ``files`` distinct .md/.txt documents of ``paras`` paragraphs under root."""
    written = []
    for n in range(start, start + files):
        rng = random.Random(f"{seed}:{n}")
        topic = _TOPICS[n % len(_TOPICS)]
        ext = "md" if n % 2 == 0 else "txt"
        path = root / topic / f"doc-{n:05d}.{ext}"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = "\n\n".join(paragraph(rng, sentences) for _ in range(paras))
        title = f"# {topic.title()} note {n}\n\n" if ext == "md" else f"{topic} note {n}\n\n"
        path.write_text(title + body + "\n", encoding="utf-8")
        written.append(path)
    return written


class DenseFakeEmbedder:
    """Deterministic dense unit vectors (seeded by the text's hash), for storage benches.

    ``fake:<dim>`` vectors are sparse and compress well in git; real model vectors do not.
    These are dense float32 noise like a real model's, so repository sizes are realistic.
    """

    def __init__(self, dim: int = 384, count_tokens: Callable[[str], int] | None = None) -> None:
        self.dim = dim
        self.model_id = f"bench-dense:{dim}"
        self._count = count_tokens

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Return one dense normalized pseudo-random vector per text."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, text in enumerate(texts):
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
            vec = np.random.default_rng(seed).standard_normal(self.dim)
            out[i] = vec / np.linalg.norm(vec)
        return out

    def count_tokens(self, text: str) -> int:
        """Count tokens with the given counter, or words."""
        return self._count(text) if self._count else len(re.findall(r"\w+", text))


def kbgit_cmd() -> list[str]:
    """Return the argv prefix of the installed ``kbgit`` console script."""
    exe = Path(sys.executable).parent / "kbgit"
    if exe.exists():
        return [str(exe)]
    found = shutil.which("kbgit")
    return [found] if found else [sys.executable, "-m", "kbgit"]


def thread_env(threads: int) -> dict[str, str]:
    """Return an environment that pins torch/OpenMP/MKL to ``threads`` threads."""
    env = dict(os.environ)
    for key in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[key] = str(threads)
    env["HF_HUB_OFFLINE"] = "1"
    env["TRANSFORMERS_OFFLINE"] = "1"
    env["TOKENIZERS_PARALLELISM"] = "false"
    return env


def run_timed(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, str]:
    """Run a process to completion; return (wall seconds, stdout); raise on failure."""
    wall, _cpu, out = run_measured(argv, env)
    return wall, out


def run_measured(argv: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """Run a process to completion; return (wall s, its CPU s user+sys, stdout)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, check=False)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[:3]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc.stdout


def _cpu_now() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Stopwatch:
    """Wall time and CPU time (this process and its waited-for children, e.g. git) of a block.

    >>> with Stopwatch() as sw:
    ...     pass
    >>> sw.wall >= 0 and sw.cpu >= 0
    True
    """

    def __enter__(self) -> Stopwatch:
        self._w, self._c = time.perf_counter(), _cpu_now()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = _cpu_now() - self._c


def tree_bytes(path: Path) -> int:
    """Return the apparent size (sum of file sizes) of everything under path."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def disk_bytes(path: Path) -> int:
    """Return the allocated size (``du``) of everything under path."""
    return sum(p.stat().st_blocks * 512 for p in path.rglob("*") if p.is_file())


def head_tree_bytes(repo: Path, rev: str = "HEAD") -> int:
    """Return the total size of the blobs in ``rev``'s tree (what a checkout holds)."""
    out = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "-r", "-l", "--full-tree", rev],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sum(int(line.split()[3]) for line in out.splitlines() if line.split()[1] == "blob")


def segment_rows(repo: Path, rev: str = "HEAD") -> list[dict]:
    """Return every row of every segment jsonl of ``rev``, in segment order."""
    names = subprocess.run(
        ["git", "-C", str(repo), "ls-tree", "--name-only", f"{rev}:index"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    rows = []
    for name in sorted(n for n in names if n.endswith(".jsonl")):
        raw = subprocess.run(
            ["git", "-C", str(repo), "show", f"{rev}:index/{name}"],
            capture_output=True,
            check=True,
        ).stdout
        rows += [json.loads(line) for line in raw.decode().splitlines()]
    return rows


def median(xs: Sequence[float]) -> float:
    """Return the median."""
    return statistics.median(xs)


def verdict(label: str, ratio: float, goal: float) -> str:
    """Format one ratio line against a ``<=`` goal, with PASS or MISS."""
    mark = "PASS" if ratio <= goal else "MISS"
    return f"{label}: {ratio:.3f} (goal <= {goal:g})  {mark}"


def banner(title: str) -> None:
    """Print the bench title with the date and the machine."""
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    print(f"== {title}")
    print(
        f"   {now}; {os.cpu_count()} cores; Python {platform.python_version()}; "
        f"{platform.machine()} {platform.system()}"
    )


def print_load() -> None:
    """Print the load average: the box is shared, and other work inflates either side."""
    one, five, fifteen = os.getloadavg()
    print(f"   load average {one:.2f} {five:.2f} {fifteen:.2f} on {os.cpu_count()} cores")


def abba(
    name: str,
    sides: dict[str, Callable[[], tuple[float, float]]],
    rounds: int,
    goal: float,
) -> dict[str, float]:
    """Time two sides in ABBA order; print each run and the first/second ratios.

    Each side returns (wall s, CPU s). Ratios: of wall totals, of best walls (noise on a
    shared box only ever adds time), and of CPU totals (less sensitive to other load).
    """
    (a, fa), (b, fb) = sides.items()
    got: dict[str, list[tuple[float, float]]] = {a: [], b: []}
    for r in range(rounds):
        order = [(a, fa), (b, fb)] if r % 2 == 0 else [(b, fb), (a, fa)]
        for label, fn in order:
            wall, cpu = fn()
            got[label].append((wall, cpu))
            print(f"   [{name}] round {r + 1} {label:9s} wall {wall:7.2f}s  cpu {cpu:7.2f}s")
    wa, wb = [w for w, _ in got[a]], [w for w, _ in got[b]]
    ca, cb = [x for _, x in got[a]], [x for _, x in got[b]]
    for label, walls, cpus in ((a, wa, ca), (b, wb, cb)):
        print(
            f"   [{name}] {label}: wall total {sum(walls):.2f}s, best {min(walls):.2f}s, "
            f"median {median(walls):.2f}s; cpu total {sum(cpus):.2f}s"
        )
    ratios = {
        "wall totals": sum(wa) / sum(wb),
        f"wall best of {rounds}": min(wa) / min(wb),
        "cpu totals": sum(ca) / sum(cb),
    }
    for kind, ratio in ratios.items():
        print("   " + verdict(f"{name} {a}/{b}, {kind}", ratio, goal))
    return ratios

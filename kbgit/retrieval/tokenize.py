"""Tokenizers for the lexical index: words for alphabetic scripts, words or bigrams for CJK.

English follows ``bm25s``'s defaults (lower case, runs of two or more word characters,
its English stopword list, no stemmer). CJK has no spaces, so a run of Han, kana or
Hangul is cut by ``rjieba`` (a maintained Rust port of jieba) or into overlapping
character bigrams; bench/bench_retrieval.py measures both.

>>> tokenize("How does heapq.heappushpop work?")
['heapq', 'heappushpop', 'work']
>>> tokenize("如何防止多个节点同时写入", cjk="bigram")[:3]
['如何', '何防', '防止']
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

#: CJK segmentation modes
CJK_MODES = ("jieba", "bigram")
DEFAULT_CJK = "jieba"

# a CJK run (Han, kana, Hangul) or a word of 2+ word characters without CJK in it
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uac00-\ud7af"
_TOKEN = re.compile(rf"[{_CJK}]+|[^\W{_CJK}]{{2,}}")
_IS_CJK = re.compile(rf"[{_CJK}]")

#: function words that carry no topic in Chinese questions (jieba emits them as tokens)
_CJK_STOP = frozenset(
    [
        "的",
        "了",
        "是",
        "在",
        "和",
        "与",
        "或",
        "吗",
        "呢",
        "吧",
        "啊",
        "么",
        "什么",
        "怎么",
        "怎样",
        "如何",
        "哪些",
        "哪里",
        "为什么",
        "会",
        "能",
        "要",
        "有",
        "就",
        "也",
        "都",
        "把",
        "被",
        "给",
        "对",
        "从",
        "到",
        "一个",
        "这个",
        "那个",
        "多少",
    ]
)


#: bm25s's English stopwords (Lucene's English set), equal to ``bm25s.stopwords.STOPWORDS_EN``
#: (tests/test_retrieval.py checks); not imported from bm25s at run time because importing
#: the package costs 2-5 s of server start on a busy box
STOPWORDS_EN = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    ]
)


def _bigrams(run: str) -> list[str]:
    if len(run) == 1:
        return [run]
    return [run[i : i + 2] for i in range(len(run) - 1)]


@functools.lru_cache(maxsize=1)
def _jieba() -> Callable[[str], list[str]]:
    import rjieba

    return rjieba.cut


def _jieba_words(run: str) -> list[str]:
    return [w for w in _jieba()(run) if w not in _CJK_STOP]


def tokenize(text: str, *, cjk: str = DEFAULT_CJK) -> list[str]:
    """Return the index terms of ``text`` (lower-cased words, stopwords dropped, CJK split)."""
    cut = _jieba_words if cjk == "jieba" else _bigrams
    stop = STOPWORDS_EN
    out: list[str] = []
    for word in _TOKEN.findall(text.lower()):
        if _IS_CJK.match(word):
            out.extend(cut(word))
        elif word not in stop:
            out.append(word)
    return out

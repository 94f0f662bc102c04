"""Write m2kt's shipped anchor set: task-agnostic sentences built from the auxiliary names.

    python benchmarks/build_anchor_set.py        # rewrites src/m2kt/anchors/words-v1.txt

Each sentence puts one to three of the 4,096 common English words shipped for model patches
(`m2kt/patch/aux_class_names.txt`, from the bert-base-uncased WordPiece vocabulary) into one of
a few neutral frames. The frames name no task, domain or label, so the set is the same for
every task; the words cover the everyday vocabulary a text model spreads its space over. The
output is deterministic: rerunning it reproduces the committed file byte for byte.
"""

from __future__ import annotations

import random
from pathlib import Path

from m2kt.patch.aux_classes import shipped_aux_names

FRAMES = (
    "There was some talk about {a} and {b}.",
    "She wrote a few lines on {a}, then on {b}.",
    "The picture showed {a} next to {b}.",
    "Nobody expected {a} to matter so much.",
    "He kept thinking about {a}.",
    "A short note about {a}, {b} and {c}.",
    "We spent the afternoon on {a}.",
    "It had something to do with {a}.",
    "The list began with {a} and ended with {b}.",
    "They asked what {a} has to do with {b}.",
    "{a} came up again in the conversation.",
    "Everyone had an opinion about {a}.",
    "The word {a} appeared twice on the page.",
    "I looked up {a}, {b} and {c} later that day.",
    "Somewhere between {a} and {b} the story changed.",
    "The second chapter is mostly about {a}.",
)
COUNT = 4096
SEED = 0
OUT = Path(__file__).resolve().parents[1] / "src/m2kt/anchors/words-v1.txt"
HEADER = (
    "# m2kt anchor set `words`, version 1: task-agnostic sentences for aligning two models'\n"
    "# spaces. Built by benchmarks/build_anchor_set.py from m2kt/patch/aux_class_names.txt\n"
    "# (bert-base-uncased WordPiece words) and neutral frames. Licence: Apache-2.0 (m2kt).\n"
)


def sentences() -> list[str]:
    words = list(shipped_aux_names())
    rng = random.Random(SEED)
    found: list[str] = []
    seen: set[str] = set()
    while len(found) < COUNT:
        frame = FRAMES[len(found) % len(FRAMES)]
        a, b, c = rng.sample(words, 3)
        text = frame.format(a=a, b=b, c=c)
        text = text[0].upper() + text[1:]
        if text not in seen:
            seen.add(text)
            found.append(text)
    return found


if __name__ == "__main__":
    OUT.write_text(HEADER + "\n".join(sentences()) + "\n", encoding="utf-8")
    print(f"wrote {OUT} ({COUNT} sentences)")

"""Experiment (docs/llm-cache.md, "Tried: a fitted score"): a logistic score over cosine and
lexical features of each cache candidate, fitted on the tune questions (0-499) of
paraphrase_pairs.json, its curve printed for both parts. Not used by the cache.

    .venv/bin/python benchmarks/llm_cache_fitted_score.py
"""

import re
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression

from govml.llm.cache.agreement import _missing_terms, key_terms, negated, numbers
from govml.llm.cache.evaluation import ask_paraphrases, load_paraphrase_pairs
from govml.llm.embedding import get_embedder

PAIRS = Path(__file__).resolve().parents[2] / "shared" / "data" / "llm" / "paraphrase_pairs.json"
pairs = load_paraphrase_pairs(PAIRS)
emb = get_embedder("minilm")
out = ask_paraphrases(pairs, emb, seed=0, candidates=5)
STOP = set(
    "the a an of to in and or is are be for on with how what do does i can it that this"
    " by as from at my your which when why where".split()
)


def words(t):
    return {w for w in re.findall(r"[a-z0-9]+", t.lower()) if w not in STOP}


def feats(q, cands, k):
    entry, sim = cands[k]
    p = entry.prompt
    a, b = words(q), words(p)
    jac = len(a & b) / max(1, len(a | b))
    nxt = cands[k + 1][1] if k + 1 < len(cands) else sim - 0.1
    top = cands[0][1]
    num = float(numbers(q) != numbers(p))
    neg = float(negated(q) != negated(p))
    miss = len(_missing_terms(key_terms(q), p)) + len(_missing_terms(key_terms(p), q))
    lr = min(len(q), len(p)) / max(len(q), len(p))
    return [sim, sim - nxt, top - sim, jac, num, neg, float(miss > 0), lr, float(k == 0)]


X, y, qi = [], [], []
for i, (q, cands) in enumerate(zip(out.questions, out.candidates, strict=True)):
    for k in range(len(cands)):
        X.append(feats(q, cands, k))
        y.append(cands[k][0].id in out.correct_ids[i])
        qi.append((i, k))
X = np.array(X)
y = np.array(y)
qi = np.array(qi)
tune = qi[:, 0] < 500
model = LogisticRegression(C=1.0, max_iter=2000).fit(X[tune], y[tune])
print(
    "coef",
    dict(
        zip(
            "sim gap_next gap_top jac num neg terms lenratio first".split(),
            model.coef_[0].round(2),
            strict=True,
        )
    ),
    model.intercept_.round(2),
)
prob = model.predict_proba(X)[:, 1]


def evaluate(qs, t, score):
    correct = false = wrong = 0
    ans = [i for i in qs if out.answerable[i]]
    un = [i for i in qs if not out.answerable[i]]
    for i in qs:
        rows = np.flatnonzero(qi[:, 0] == i)
        if not len(rows):
            continue
        best = rows[np.argmax(score[rows])]
        if score[best] < t:
            continue
        cid = out.candidates[i][qi[best, 1]][0].id
        if not out.answerable[i]:
            false += 1
        elif cid in out.correct_ids[i]:
            correct += 1
        else:
            wrong += 1
    hits = correct + false + wrong
    return correct / len(ans), (correct / hits if hits else 1.0), false / len(un)


res = {}
for part, qs in (("tune", range(500)), ("report", range(500, len(pairs)))):
    print(f"-- {part}: prob threshold, hit rate, precision, false hits")
    res[part] = []
    for t in np.arange(0.3, 0.96, 0.05):
        h, p, f = evaluate(list(qs), t, prob)
        res[part].append((round(float(t), 2), round(h, 3), round(p, 3), round(f, 3)))
        print(f"{t:.2f} {h:.3f} {p:.3f} {f:.3f}")

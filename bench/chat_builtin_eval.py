#!/usr/bin/env python3
"""Scores the built-in chat answerer offline, exactly as `chat_eval.py --chat` scores the API.

Reads the JSON lines of `cargo run --example chat_answers` (one per question: id, citations) and
reuses chat_eval.py's id normalisation, scoring and tables (its search columns are left empty).

    DATABASE_URL=postgres://127.0.0.1/co_eval cargo run --example chat_answers > /tmp/answers.jsonl
    bench/chat_builtin_eval.py /tmp/answers.jsonl [--only pci,cis-03] [--holdout 3] [--json]

--holdout N scores separately every N-th question (by position) and the rest, to check that
changes tuned on one part generalise to the other. Each part ends with its figures pooled over
ids (the API test's count) beside the means per question.
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import chat_eval  # noqa: E402


class Canned:
    """A chat_eval client answering from the precomputed lines."""

    def __init__(self, answers):
        self.answers = answers
        self.current = None

    def call(self, method, path, body=None):
        if method == "GET":
            return 200, {"items": []}, None, 0.0
        a = self.answers.get(self.current)
        if a is None:
            return None, None, "no answer line", 0.0
        return 200, {"citations": [{"id": i} for i in a["citations"]]}, None, 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("answers")
    ap.add_argument("--questions", default=os.path.join(chat_eval.ROOT, "tests", "chat", "questions.json"))
    ap.add_argument("--kb-data", default=os.path.join(chat_eval.ROOT, "data", "compliance"))
    ap.add_argument("--only")
    ap.add_argument("--holdout", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    kb = chat_eval.Kb(args.kb_data)
    questions = json.load(open(args.questions, encoding="utf-8"))
    answers = {}
    for line in open(args.answers, encoding="utf-8"):
        if line.strip():
            a = json.loads(line)
            answers[a["id"]] = a
    if args.only:
        sel = {s.strip() for s in args.only.split(",")}
        questions = [q for q in questions if q["id"] in sel or chat_eval.family(q["id"]) in sel]
    client = Canned(answers)
    parts = {"all": questions}
    if args.holdout:
        parts = {"tuned": [q for i, q in enumerate(questions) if i % args.holdout],
                 "held out": [q for i, q in enumerate(questions) if not i % args.holdout]}
    for name, qs in parts.items():
        results = []
        for q in qs:
            client.current = q["id"]
            results.append(chat_eval.evaluate(q, kb, client, client, 10))
        summary = chat_eval.summarise(results, True)
        if args.json:
            print(json.dumps({"part": name, "summary": summary, "results": results}))
            continue
        print(f"== {name} ({len(qs)} questions)")
        print(f"{'family':<18}{'n':>5}{'recall':>10}{'precision':>11}{'invented':>10}{'clean':>8}")
        for fam, row in summary.items():
            fmt = lambda v: "-" if v is None else f"{100 * v:.1f}%"
            print(f"{chat_eval.FAMILY_NAMES.get(fam, fam):<18}{row['n']:>5}{fmt(row['chat_recall']):>10}"
                  f"{fmt(row['chat_precision']):>11}{row['chat_invented']:>10}{fmt(row['chat_clean_no_must']):>8}")
        # Pooled over ids, as the API test counts: every must-cite id and every cited id weigh alike.
        must = sum(len(r["must_cite"]) for r in results)
        found = sum(len(r["chat"].get("found", [])) for r in results)
        cited = sum(len({kb.norm(i) for i in r["chat"].get("cited", []) if kb.norm(i)}) for r in results)
        relevant = cited - sum(len(r["chat"].get("off_list", [])) for r in results)
        if must and cited:
            print(f"pooled over ids: recall {found}/{must} = {found / must:.3f}, "
                  f"precision {relevant}/{cited} = {relevant / cited:.3f}")
        # `is not None`, not `or 1`: a question with recall 0 is the worst miss, not a pass.
        bad = [r for r in results if r["chat"].get("recall") not in (None, 1) or r["chat"].get("precision") not in (None, 1)
               or r["chat"].get("invented") or r["chat"].get("clean") is False]
        for r in bad:
            c = r["chat"]
            missed = sorted(set(r["must_cite"]) - set(c.get("found", [])))
            print(f"  {r['id']:<9} missed={missed} off={c.get('off_list')} invented={c.get('invented')}")
        inconsistent = [q["id"] for q in qs if not answers.get(q["id"], {}).get("verify_consistent", True)]
        if inconsistent:
            print(f"  verify(compose) != citations: {inconsistent}")


if __name__ == "__main__":
    main()

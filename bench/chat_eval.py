#!/usr/bin/env python3
"""Evaluate KB search and the security Q&A chat against tests/chat/questions.json.

Every question names the controls a correct answer must cite (`must_cite`) and those it may also
cite (`may_cite`). This script measures, per question and per framework family:

  search  GET /api/v1/kb/search?q=<question>&limit=10
          recall@10 = share of must_cite found among the control hits (kind == "control").
  chat    (with --chat) POST /api/v1/chat {"question": ...}, Accept: application/json,
          reading citations[].id:
          recall    = share of must_cite that the answer cites,
          precision = cited controls within must_cite ∪ may_cite / cited controls,
          invented  = cited ids that do not exist in the KB (controls, and checks/remediations
                      when cited with their `check:kb:` / `remediation:kb:` prefix).
          Out-of-scope questions (empty must_cite) pass when they cite no control.

Ids are compared as `<framework id>@<version>:<native id>`, lower-cased. `pci-dss:8.4.2` gets the
only version of its framework; `cis-aws:1.5` (no version) means the newest, `cis-aws@5.0.0`; a
leading `control:` is dropped. Versions and valid ids come from the KB data directory (--kb-data,
default data/compliance next to this script).

Run it against a local server (PostgreSQL as in compose.yaml, KB loaded):

    cargo run -- serve                                   # in one terminal
    cargo run -- keys create --name eval --scope admin   # prints the key once
    # (or the installed binary: cloud-optimizer keys create --name eval --scope admin)
    bench/chat_eval.py --base-url http://127.0.0.1:8000 --api-key co_...            # search only
    bench/chat_eval.py --base-url http://127.0.0.1:8000 --api-key co_... --chat     # + chat
    bench/chat_eval.py ... --json > results.json          # machine-readable results
    bench/chat_eval.py --validate                         # offline: every id in the file exists

The key can also come from the CO_API_KEY environment variable. Non-200 answers, timeouts and
unparseable bodies are counted per question and reported; they never stop the run. Exit status:
0 when the run completed (whatever the scores), 2 on bad usage or an invalid questions file.
Python 3 standard library only.
"""
import argparse
import glob
import json
import os
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
FAMILIES = ["hipaa", "soc2", "pci", "gdpr", "cis", "fsbp", "wa", "cross", "oos"]
FAMILY_NAMES = {"hipaa": "HIPAA", "soc2": "SOC 2", "pci": "PCI DSS", "gdpr": "GDPR", "cis": "CIS AWS",
                "fsbp": "AWS FSBP", "wa": "Well-Architected", "cross": "cross-framework",
                "oos": "out of scope"}


# ---------------------------------------------------------------- KB data and id normalisation

def _version_key(v):
    return [(0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"[.\-]", v)]


class Kb:
    """Control, check and remediation ids of the KB data, and the version rules for ids."""

    def __init__(self, data_dir):
        self.versions = {}  # framework id -> [versions]
        self.controls = set()  # "<fw>@<version>:<native>" lower-cased
        self.exact = set()  # same, case as written (for --validate)
        for fw_file in glob.glob(os.path.join(data_dir, "*", "framework.json")):
            with open(fw_file, encoding="utf-8") as fh:
                fw = json.load(fh)
            key = f"{fw['id']}@{fw['version']}"
            self.versions.setdefault(fw["id"].lower(), []).append(fw["version"].lower())
            ctl_file = os.path.join(os.path.dirname(fw_file), "controls.json")
            with open(ctl_file, encoding="utf-8") as fh:
                for c in json.load(fh):
                    self.exact.add(f"{key}:{c['id']}")
                    self.controls.add(f"{key}:{c['id']}".lower())
        if not self.controls:
            raise SystemExit(f"no KB data under {data_dir} (use --kb-data)")
        self.newest = {f: max(v, key=_version_key) for f, v in self.versions.items()}
        self.checks, self.remediations = set(), set()
        for path in glob.glob(os.path.join(data_dir, "common", "checks-*.json")):
            with open(path, encoding="utf-8") as fh:
                self.checks.update(c["id"].lower() for c in json.load(fh))
        for path in glob.glob(os.path.join(data_dir, "common", "remediations-*.json")):
            with open(path, encoding="utf-8") as fh:
                self.remediations.update(r["id"].lower() for r in json.load(fh))

    def norm(self, cid):
        """Control id in any accepted form -> `<fw>@<version>:<native>` lower-cased, or None when
        the string is not a control id (a check, remediation or service)."""
        s = str(cid).strip()
        low = s.lower()
        if low.startswith(("check:", "remediation:", "aws_service:")):
            return None
        if low.startswith("control:"):
            s = s[len("control:"):]
        fw, sep, native = s.partition(":")
        if not sep:
            return s.lower()
        name, at, ver = fw.partition("@")
        name = name.strip().lower()
        if not at:
            ver = self.newest.get(name, "")
        key = f"{name}@{ver.strip().lower()}" if ver else name
        return f"{key}:{native.strip().lower()}"

    def exists(self, cid):
        """True / False for known kinds; checks and remediations are looked up by their kb id."""
        low = str(cid).strip().lower()
        if low.startswith("check:"):
            return low.split(":")[-1] in self.checks
        if low.startswith("remediation:"):
            return low.split(":")[-1] in self.remediations
        if low.startswith("aws_service:"):
            return True
        return self.norm(cid) in self.controls


def family(qid):
    return qid.split("-", 1)[0]


# ---------------------------------------------------------------- questions file

INTENTS = {"requirement_question", "control_lookup", "remediation", "service_assessment",
           "cross_framework", "framework_overview", "out_of_scope"}


def validate(questions, kb):
    """Errors in the questions file: unknown ids, bad fields, duplicates."""
    errors, seen = [], set()
    for i, q in enumerate(questions):
        qid = q.get("id", f"#{i}")
        for field in ("id", "question", "intent", "frameworks", "must_cite", "may_cite", "notes"):
            if field not in q:
                errors.append(f"{qid}: missing {field}")
        if qid in seen:
            errors.append(f"{qid}: duplicate id")
        seen.add(qid)
        if family(qid) not in FAMILIES:
            errors.append(f"{qid}: id prefix must be one of {FAMILIES}")
        if q.get("intent") not in INTENTS:
            errors.append(f"{qid}: unknown intent {q.get('intent')!r}")
        must, may = q.get("must_cite", []), q.get("may_cite", [])
        for cid in must + may:
            fw = cid.split(":", 1)[0]
            if "@" not in fw and len(kb.versions.get(fw.lower(), [])) != 1:
                errors.append(f"{qid}: {cid}: name the version of {fw} (several in the KB)")
            name, _, ver = fw.partition("@")
            ver = ver or (kb.versions.get(name, [""])[0])
            if f"{name}@{ver}:{cid.split(':', 1)[-1]}" not in kb.exact:
                errors.append(f"{qid}: {cid}: not a control in the KB data")
        dup = set(must) & set(may)
        if dup:
            errors.append(f"{qid}: in both must_cite and may_cite: {sorted(dup)}")
        if len(set(must)) != len(must) or len(set(may)) != len(may):
            errors.append(f"{qid}: repeated id in must_cite or may_cite")
        if (q.get("intent") == "out_of_scope") != (family(qid) == "oos"):
            errors.append(f"{qid}: out_of_scope intent only (and always) for oos-* questions")
    return errors


# ---------------------------------------------------------------- HTTP

class Client:
    def __init__(self, base_url, api_key, timeout, retries):
        self.base = base_url.rstrip("/")
        self.key = api_key
        self.timeout = timeout
        self.retries = retries

    def call(self, method, path, body=None):
        """(status, parsed JSON or None, error text or None, seconds). Never raises."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Accept": "application/json", "Authorization": f"Bearer {self.key}",
                   "User-Agent": "cloud-optimizer-chat-eval/1"}
        if data is not None:
            headers["Content-Type"] = "application/json"
        attempt, t0 = 0, time.perf_counter()
        while True:
            attempt += 1
            req = urllib.request.Request(self.base + path, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as r:
                    status, raw = r.status, r.read()
            except urllib.error.HTTPError as e:
                status, raw = e.code, e.read() if e.fp else b""
                if status in (429, 502, 503, 504) and attempt <= self.retries:
                    time.sleep(_retry_after(e.headers.get("Retry-After"), attempt))
                    continue
            except Exception as e:  # timeouts, refused connections, resets
                if attempt <= self.retries and not isinstance(e, ValueError):
                    time.sleep(min(2 ** attempt, 10))
                    continue
                return None, None, f"{type(e).__name__}: {e}", time.perf_counter() - t0
            secs = time.perf_counter() - t0
            try:
                parsed = json.loads(raw.decode("utf-8")) if raw else None
            except (UnicodeDecodeError, json.JSONDecodeError):
                return status, None, f"HTTP {status}: body is not JSON", secs
            if status != 200:
                detail = parsed.get("detail") or parsed.get("title") if isinstance(parsed, dict) else None
                return status, parsed, f"HTTP {status}" + (f": {detail}" if detail else ""), secs
            return status, parsed, None, secs


def _retry_after(value, attempt):
    try:
        return min(max(float(value), 0.1), 30.0)
    except (TypeError, ValueError):
        return min(2 ** attempt, 10)


def search_hits(body):
    if isinstance(body, dict):
        body = body.get("items", body.get("hits", []))
    return body if isinstance(body, list) else []


def citation_ids(body):
    if not isinstance(body, dict):
        return None
    cites = body.get("citations")
    if cites is None and isinstance(body.get("answer"), dict):
        cites = body["answer"].get("citations")
    if not isinstance(cites, list):
        return None
    out = []
    for c in cites:
        if isinstance(c, dict) and c.get("id"):
            out.append(str(c["id"]))
        elif isinstance(c, str):
            out.append(c)
    return out


# ---------------------------------------------------------------- evaluation

def evaluate(q, kb, search_client, chat_client, limit):
    must = {kb.norm(c) for c in q["must_cite"]}
    allowed = must | {kb.norm(c) for c in q["may_cite"]}
    res = {"id": q["id"], "family": family(q["id"]), "intent": q["intent"], "must_cite": sorted(must)}

    path = "/api/v1/kb/search?" + urllib.parse.urlencode({"q": q["question"][:500], "limit": limit})
    status, body, err, secs = search_client.call("GET", path)
    s = {"status": status, "error": err, "seconds": round(secs, 3)}
    if err is None:
        hits = [h for h in search_hits(body) if isinstance(h, dict) and h.get("kind") == "control"]
        found = [kb.norm(h.get("id", "")) for h in hits]
        s["hits"] = found
        s["found"] = sorted(must & set(found))
        s["recall"] = len(s["found"]) / len(must) if must else None
        s["clean"] = (not found) if not must and q["intent"] == "out_of_scope" else None
    res["search"] = s

    if chat_client is not None:
        status, body, err, secs = chat_client.call("POST", "/api/v1/chat", {"question": q["question"]})
        c = {"status": status, "error": err, "seconds": round(secs, 3)}
        ids = citation_ids(body) if err is None else None
        if err is None and ids is None:
            c["error"] = "no citations[] in the answer"
        if ids is not None:
            ctl = [kb.norm(i) for i in ids if kb.norm(i) is not None]
            cited = sorted(set(ctl))
            c["cited"] = ids
            c["invented"] = sorted({i for i in ids if not kb.exists(i)})
            c["found"] = sorted(must & set(cited))
            c["recall"] = len(c["found"]) / len(must) if must else None
            c["precision"] = (len([i for i in cited if i in allowed]) / len(cited)) if cited else None
            c["off_list"] = [i for i in cited if i not in allowed]
            c["clean"] = (not cited) if not must else None
        res["chat"] = c
    return res


def _mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarise(results, do_chat, by="family"):
    keys = FAMILIES if by == "family" else sorted(INTENTS)
    groups = {k: [r for r in results if r[by] == k] for k in keys}
    groups = {k: g for k, g in groups.items() if g}
    groups["overall"] = results
    out = {}
    for name, rs in groups.items():
        s = [r["search"] for r in rs]
        row = {"n": len(rs),
               "search_recall": _mean(x.get("recall") for x in s),
               "search_all_found": _mean((1.0 if x.get("recall") == 1.0 else 0.0) if x.get("recall") is not None else None for x in s),
               "search_errors": sum(1 for x in s if x.get("error"))}
        if do_chat:
            c = [r["chat"] for r in rs]
            row.update({
                "chat_recall": _mean(x.get("recall") for x in c),
                "chat_precision": _mean(x.get("precision") for x in c),
                "chat_invented": sum(len(x.get("invented", [])) for x in c),
                "chat_answers_with_invented": sum(1 for x in c if x.get("invented")),
                "chat_clean_no_must": _mean((1.0 if x["clean"] else 0.0) if x.get("clean") is not None else None for x in c),
                "chat_errors": sum(1 for x in c if x.get("error")),
                "chat_seconds_mean": _mean(x.get("seconds") for x in c if not x.get("error")),
            })
        out[name] = row
    return out


def _fmt(v, pct=True):
    if v is None:
        return "-"
    if isinstance(v, float) and pct:
        return f"{100 * v:5.1f}%"
    return str(v)


def print_table(summary, results, do_chat):
    cols = [("n", "n", False), ("search_recall", "search R@10", True), ("search_all_found", "all found", True),
            ("search_errors", "s.err", False)]
    if do_chat:
        cols += [("chat_recall", "chat recall", True), ("chat_precision", "precision", True),
                 ("chat_invented", "invented", False), ("chat_clean_no_must", "clean(no must)", True),
                 ("chat_errors", "c.err", False), ("chat_seconds_mean", "mean s", False)]
    head = f"{'family':<18}" + "".join(f"{h:>15}" for _, h, _ in cols)
    print(head)
    print("-" * len(head))
    for name, row in summary.items():
        if name == "overall":
            print("-" * len(head))
        label = FAMILY_NAMES.get(name, name)
        cells = []
        for key, _, pct in cols:
            v = row.get(key)
            if key == "chat_seconds_mean" and v is not None:
                v = f"{v:.2f}"
            cells.append(f"{_fmt(v, pct):>15}")
        print(f"{label:<18}" + "".join(cells))
    errs = [(r["id"], k, r[k]["error"]) for r in results for k in ("search", "chat") if k in r and r[k].get("error")]
    if errs:
        print(f"\n{len(errs)} failed request(s):")
        for qid, kind, e in errs[:40]:
            print(f"  {qid:<10} {kind:<6} {e}")
        if len(errs) > 40:
            print(f"  ... and {len(errs) - 40} more (see --json)")
    missed = [(r["id"], sorted(set(r["must_cite"]) - set(r["search"].get("found", []))))
              for r in results if r["search"].get("recall") is not None and r["search"]["recall"] < 1.0]
    if missed:
        print(f"\nsearch misses ({len(missed)} questions):")
        for qid, m in missed:
            print(f"  {qid:<10} {', '.join(m)}")
    if do_chat:
        inv = [(r["id"], r["chat"]["invented"]) for r in results if r["chat"].get("invented")]
        if inv:
            print(f"\ninvented citations ({len(inv)} answers):")
            for qid, ids in inv:
                print(f"  {qid:<10} {', '.join(ids)}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base-url", default=os.environ.get("CO_BASE_URL", "http://127.0.0.1:8000"))
    ap.add_argument("--api-key", default=os.environ.get("CO_API_KEY"))
    ap.add_argument("--questions", default=os.path.join(ROOT, "tests", "chat", "questions.json"))
    ap.add_argument("--kb-data", default=os.path.join(ROOT, "data", "compliance"))
    ap.add_argument("--chat", action="store_true", help="also ask POST /api/v1/chat")
    ap.add_argument("--json", action="store_true", help="print machine-readable results instead of tables")
    ap.add_argument("--only", help="comma-separated families or question ids (e.g. pci,cis-03)")
    ap.add_argument("--limit", type=int, default=10, help="search limit (recall@limit), default 10")
    ap.add_argument("--timeout", type=float, default=30.0, help="seconds per search request")
    ap.add_argument("--chat-timeout", type=float, default=300.0, help="seconds per chat request")
    ap.add_argument("--retries", type=int, default=2, help="retries on 429/5xx/network errors")
    ap.add_argument("--validate", action="store_true", help="check the questions file against the KB data and exit")
    args = ap.parse_args(argv)

    kb = Kb(args.kb_data)
    try:
        with open(args.questions, encoding="utf-8") as fh:
            questions = json.load(fh)
    except (OSError, json.JSONDecodeError) as e:
        print(f"cannot read {args.questions}: {e}", file=sys.stderr)
        return 2
    errors = validate(questions, kb)
    if errors:
        print(f"{args.questions}: {len(errors)} error(s)", file=sys.stderr)
        for e in errors:
            print("  " + e, file=sys.stderr)
        return 2
    if args.validate:
        counts = {}
        for q in questions:
            counts.setdefault(family(q["id"]), {}).setdefault(q["intent"], 0)
            counts[family(q["id"])][q["intent"]] += 1
        print(f"{args.questions}: {len(questions)} questions, every id exists in {args.kb_data}")
        for f in FAMILIES:
            if f in counts:
                print(f"  {FAMILY_NAMES[f]:<18} {sum(counts[f].values()):>3}  " +
                      ", ".join(f"{k} {v}" for k, v in sorted(counts[f].items())))
        return 0
    if not args.api_key:
        print("--api-key (or CO_API_KEY) is required; create one with "
              "`cloud-optimizer keys create --name eval --scope admin`", file=sys.stderr)
        return 2
    if args.only:
        sel = {s.strip() for s in args.only.split(",") if s.strip()}
        questions = [q for q in questions if q["id"] in sel or family(q["id"]) in sel]

    search = Client(args.base_url, args.api_key, args.timeout, args.retries)
    chat = Client(args.base_url, args.api_key, args.chat_timeout, args.retries) if args.chat else None
    results = []
    progress = not args.json and sys.stderr.isatty()
    for i, q in enumerate(questions, 1):
        if progress:
            print(f"\r[{i}/{len(questions)}] {q['id']:<10}", end="", file=sys.stderr, flush=True)
        results.append(evaluate(q, kb, search, chat, args.limit))
    if progress:
        print("\r" + " " * 30 + "\r", end="", file=sys.stderr)
    summary = summarise(results, args.chat)
    if args.json:
        json.dump({"base_url": args.base_url, "questions": args.questions, "chat": args.chat,
                   "limit": args.limit, "summary": summary,
                   "by_intent": summarise(results, args.chat, by="intent"), "results": results},
                  sys.stdout, indent=2, ensure_ascii=False)
        print()
    else:
        print_table(summary, results, args.chat)
    return 0


if __name__ == "__main__":
    sys.exit(main())

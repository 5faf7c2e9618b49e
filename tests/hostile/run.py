#!/usr/bin/env python3
"""Runs the hostile-input corpus (gen.py) through the swaa-chat binary and classifies each case.

Each case runs in its own scratch folder under a wall-clock cap (default 60 s) and an
address-space cap (default 8 GiB, RLIMIT_AS), with its own data dir and config path.
Outcomes, worst first:
  hang      killed at the time cap
  oom       an allocation failed under the memory cap (or the process was killed for memory)
  panic     exit 101 or 134, or "panicked" on stderr
  crash     killed by another signal (stack overflow is SIGSEGV/SIGABRT)
  raw       a terminal control byte (C0 except tab/newline/CR, DEL, C1) on stdout or stderr
  unclear   an error that does not name the file/key, says nothing to do, shows internals,
            repeats its cause, or says NAME literally
  refused   a valid (or harmless) input that should have worked failed
  clear     a clear one-line error
  ok        success
Usage: run.py [--fast] [--filter TEXT] [--jobs N] [--bin PATH] [--out DIR]
"""

import argparse
import collections
import concurrent.futures as cf
import gzip
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, HERE)
import gen  # noqa: E402
import gguf  # noqa: E402

HINT = re.compile(r"\b(give|use|re-?download|re-?export|re-?convert|decrypt|set|pass|run|check|remove|fix|convert|try|"
                  r"choose|pick|expected|allowed|must|between|at most|at least|install|fetch|delete|rename|OCR|"
                  r"save|export|split|lower|raise|shorten|one of|only|leave|add|put|see|supported|need|needs|"
                  r"larger|smaller|up to)\b", re.I)
INTERNALS = re.compile(r"panicked|unwrap\(\)|assertion|parser panic|RUST_BACKTRACE|called `Option|\bNAME\b|stack backtrace")
CONTROL = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\xc2[\x80-\x9f]")
ORDER = ["hang", "oom", "panic", "crash", "raw", "unclear", "refused", "clear", "ok"]


def base_inputs(work):
    """The tiny models' ingredients and a small valid document."""
    base = {}
    cache = os.environ.get("SWAA_CHAT_CACHE", os.path.expanduser("~/.cache/swaa-chat"))
    smol = os.path.join(cache, "models", "smollm2-135m.gguf")
    if os.path.exists(smol):
        tok = gguf.read_metadata(smol, "tokenizer.")
        raw = dict(tok)["tokenizer.ggml.tokens"]
        base["tok_kvs"] = tok
        base["vocab"] = int.from_bytes(raw[8:16], "little")
        import random
        model = os.path.join(work, "tiny.gguf")
        with open(model, "wb") as f:
            f.write(gguf.write(gguf.tiny_kvs(tok, base["vocab"]), gguf.tiny_tensors(base["vocab"], random.Random(1))))
        base["model"] = model
    else:
        print(f"note: {smol} missing (`swaa-chat models fetch smollm2-135m`): model cases skipped", file=sys.stderr)
    fx = os.path.join(ROOT, "tests", "fixtures", "tokenizer", "qwen3-tokenizer")
    with gzip.open(os.path.join(fx, "tokenizer.json.gz")) as f:
        base["st_tokenizer"] = f.read()
    with open(os.path.join(fx, "tokenizer_config.json"), "rb") as f:
        base["st_tokenizer_config"] = f.read()
    doc = os.path.join(work, "doc.txt")
    with open(doc, "w") as f:
        f.write("Greyhollow Tower stands on the cliff. The tower is 40 m tall.\n")
    base["doc"] = doc
    return base


def classify(c, rc, out, err, timed_out, names):
    text = err.decode("utf-8", "replace")
    if timed_out:
        return "hang", "timed out"
    if "memory allocation of" in text or "out of memory" in text.lower() or "Cannot allocate memory" in text or rc == -signal.SIGKILL:
        return "oom", last_line(text)
    if rc in (101, 134) or "panicked" in text:
        return "panic", last_line(text)
    if rc < 0:
        return "crash", f"signal {-rc}: {last_line(text)}"
    if CONTROL.search(out) or CONTROL.search(err):
        return "raw", repr(CONTROL.search(out + err).group())
    if rc == 0:
        return "ok", ""
    line = error_line(text)
    if c.get("expect") == "ok":
        return "refused", line
    why = unclear_reasons(line, names)
    if why:
        return "unclear", f"{why}: {line}"
    return "clear", line


def last_line(text):
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def error_line(text):
    for ln in text.splitlines():
        if ln.startswith("error"):
            return ln[:400]
    return last_line(text)


def unclear_reasons(line, names):
    if not line:
        return "no message"
    if INTERNALS.search(line):
        return "internals"
    if len(line) > 390:
        return "too long"
    m = re.search(r"(.{16,}): \1", line)
    if m:
        return "cause twice"
    if names and not any(n.lower() in line.lower() for n in names):
        return "names neither " + "/".join(names)
    if not HINT.search(line):
        return "no hint"
    return ""


def run_case(c, args, base):
    d = tempfile.mkdtemp(prefix="case-", dir=args.work)
    try:
        for name, data in c["files"].items():
            p = os.path.join(d, name)
            os.makedirs(os.path.dirname(p), exist_ok=True)
            if callable(data):
                data(p)
            elif data is not None:
                with open(p, "wb") as f:
                    f.write(data)
        if "CHMOD_000" in c["env"]:
            os.chmod(os.path.join(d, c["env"]["CHMOD_000"]), 0)
        sub = lambda s: s.replace("{dir}", d).replace("{model}", base.get("model", "")).replace("{doc}", base["doc"])  # noqa: E731
        cmd = [args.bin] + [sub(a) for a in c["cmd"]]
        env = dict(os.environ)
        env.update({"SWAA_CHAT_DATA": os.path.join(d, ".data"), "SWAA_CHAT_CONFIG": os.path.join(d, ".no-config.toml"),
                    "RUST_BACKTRACE": "0", "HF_HUB_OFFLINE": "1"})
        env.update({k: sub(v) for k, v in c["env"].items() if k != "CHMOD_000"})
        mem = args.mem_gb << 30

        def limits():
            resource.setrlimit(resource.RLIMIT_AS, (mem, mem))
            os.nice(5)

        t0 = time.time()
        p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             env=env, cwd=d, preexec_fn=limits, start_new_session=True)
        timed_out = False
        try:
            out, err = p.communicate(c["stdin"] or b"", timeout=args.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            os.killpg(p.pid, signal.SIGKILL)
            out, err = p.communicate()
        secs = time.time() - t0
        names = [os.path.basename(n.rstrip("/")) if "/" in n else n for n in c["names"]]
        outcome, detail = classify(c, p.returncode, out[-100000:] if c.get("expect") == "ok" else out, err, timed_out, names)
        return {"id": c["id"], "cat": c["cat"], "outcome": outcome, "rc": p.returncode, "secs": round(secs, 2),
                "detail": detail}
    finally:
        for root, dirs, _ in os.walk(d):
            for x in dirs:
                os.chmod(os.path.join(root, x), 0o755)
        shutil.rmtree(d, ignore_errors=True)


MODEL_CATS = ("gguf", "safetensors", "config", "flags", "template", "question")


def fast_pick(c, i):
    """CI's subset (about two minutes on 2 cores): no large cases, one in four of the mutation
    families, every other case of the categories that load a model (each costs ~0.5 s)."""
    if c["large"]:
        return False
    if re.search(r"/(flip|truncate|header-flip)-", c["id"]):
        return i % 4 == 0
    if c["cat"] in MODEL_CATS and not c["id"].endswith("/baseline"):
        return i % 2 == 0
    return True


def main():
    ap = argparse.ArgumentParser(description="hostile-input corpus runner")
    ap.add_argument("--bin", default=os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "debug", "swaa-chat"))
    ap.add_argument("--out", default=os.path.join(ROOT, "target", "hostile"))
    ap.add_argument("--fast", action="store_true", help="CI's subset: no large cases, fewer mutations and model cases, 20 s cap")
    ap.add_argument("--filter", default="", help="only cases whose id contains this")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--timeout", type=float, default=None)
    ap.add_argument("--mem-gb", type=int, default=8)
    ap.add_argument("--list", action="store_true", help="print the case ids and counts, run nothing")
    ap.add_argument("--strict", action="store_true", help="unclear messages fail the run too")
    args = ap.parse_args()
    args.timeout = args.timeout or (20 if args.fast else 60)
    os.makedirs(args.out, exist_ok=True)
    args.work = tempfile.mkdtemp(prefix="hostile-")
    try:
        base = base_inputs(args.work)
        # Lazily: the cases hold their bytes (model files of MBs), so only a few exist at once.
        def picked():
            for i, c in enumerate(gen.cases(base)):
                if args.filter in c["id"] and (not args.fast or fast_pick(c, i)):
                    yield c
        if args.list:
            n = collections.Counter()
            for c in picked():
                print(c["id"])
                n[c["cat"]] += 1
            print(dict(n), sum(n.values()), file=sys.stderr)
            return 0
        if not os.path.exists(args.bin):
            print(f"error: no binary at {args.bin}: build it with `cargo build` or pass --bin", file=sys.stderr)
            return 2
        print(f"{args.jobs} at a time, {args.timeout:.0f} s / {args.mem_gb} GiB each", file=sys.stderr)
        results, large = [], []
        t0 = time.time()

        def done(r):
            results.append(r)
            if r["outcome"] not in ("ok", "clear"):
                print(f"{r['outcome']:8} {r['id']}: {r['detail'][:200]}", file=sys.stderr, flush=True)

        with cf.ThreadPoolExecutor(args.jobs) as ex:
            running = set()
            for c in picked():
                if c["large"]:
                    large.append(c)  # they write hundreds of MB: one at a time, after the rest
                    continue
                running.add(ex.submit(run_case, c, args, base))
                if len(running) >= 2 * args.jobs:
                    finished, running = cf.wait(running, return_when=cf.FIRST_COMPLETED)
                    for f in finished:
                        done(f.result())
            for f in cf.as_completed(running):
                done(f.result())
        for c in large:
            done(run_case(c, args, base))
        with open(os.path.join(args.out, "results.jsonl"), "w") as f:
            for r in results:
                f.write(json.dumps(r) + "\n")
        table = summary(results)
        with open(os.path.join(args.out, "summary.md"), "w") as f:
            f.write(table)
        print(table)
        print(f"{len(results)} cases in {time.time() - t0:.0f} s; results in {args.out}", file=sys.stderr)
        failing = {"hang", "oom", "panic", "crash", "raw", "refused"} | ({"unclear"} if args.strict else set())
        known = known_failures()
        bad = [r for r in results if r["outcome"] in failing and r["id"] not in known]
        for r in results:
            if r["id"] in known and r["outcome"] in ("ok", "clear"):
                print(f"note: {r['id']} passes now: remove it from known.txt", file=sys.stderr)
        for r in bad:
            print(f"FAIL {r['outcome']} {r['id']}: {r['detail'][:200]}", file=sys.stderr)
        return 1 if bad else 0
    finally:
        shutil.rmtree(args.work, ignore_errors=True)


def known_failures():
    """Case ids that still fail, each with its reason in known.txt: reported, not failing."""
    path = os.path.join(HERE, "known.txt")
    with open(path) as f:
        return {ln.split()[0] for ln in f if ln.strip() and not ln.startswith("#")}


def summary(results):
    cats = sorted({r["cat"] for r in results})
    counts = collections.Counter((r["cat"], r["outcome"]) for r in results)
    lines = ["| category | cases | " + " | ".join(ORDER) + " |", "|---" * (len(ORDER) + 2) + "|"]
    for cat in cats + ["all"]:
        row = [sum(v for (c, _), v in counts.items() if c == cat or cat == "all")]
        row += [sum(v for (c, o), v in counts.items() if o == out and (c == cat or cat == "all")) for out in ORDER]
        lines.append(f"| {cat} | " + " | ".join(str(x) for x in row) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())

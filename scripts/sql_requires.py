#!/usr/bin/env python3
"""Checks the `requires` lists of src/lib.rs's extension_sql_file!s against the SQL they name.

pgrx orders the install script by these lists: a hand-written file must come after every Rust
function and every other file's function, table or view it names (a LANGUAGE sql body is
checked when it is created; a COMMENT ON or a trigger needs its function). The SQL files are the
one definition of what they use; this check fails when a list misses such a requirement
(directly or through a file it requires), or when a file uses what finalize.sql, which comes
last, defines. An entry a file does not need only orders the files, and is allowed.

  scripts/sql_requires.py           prints what each file needs and its list
  scripts/sql_requires.py --check   fails on a missing requirement
"""
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from function_table import ROOT, rust_functions, takes_any_ids  # noqa: E402


def sql_files():
    """name -> {"path", "requires" (list of str), "order" (bootstrap/finalize/None)}."""
    text = open(os.path.join(ROOT, "src/lib.rs")).read()
    files = {}
    for m in re.finditer(r"pgrx::extension_sql_file!\((.*?)\);", text, re.S):
        body = m.group(1)
        path = re.search(r'"\.\./(sql/[^"]+)"', body).group(1)
        name = re.search(r'name\s*=\s*"([^"]+)"', body).group(1)
        req = re.search(r"requires\s*=\s*\[(.*?)\]", body, re.S)
        requires = [r.strip().strip('"') for r in req.group(1).split(",") if r.strip()] if req else []
        order = "bootstrap" if re.search(r",\s*bootstrap\s*$", body.strip()) else (
            "finalize" if re.search(r",\s*finalize\s*$", body.strip()) else None)
        files[name] = {"path": path, "requires": requires, "order": order}
    return files


OBJECT = r"personalize\.([a-z_0-9]+)"
CREATES = (r"CREATE (?:OR REPLACE )?(?:FUNCTION|TABLE|VIEW|TYPE|SEQUENCE|UNLOGGED TABLE|"
           r"(?:UNIQUE )?INDEX [a-z_0-9]+ ON) " + OBJECT)


def strip_comments(text):
    return re.sub(r"--[^\n]*", "", text)


def defined_objects(files):
    """Object name -> the files (by name) that create it. An overload taking ids of any type
    (sql/any_ids.sql) is left out: it calls the text one, defined elsewhere."""
    found = {}
    for name, f in files.items():
        text = strip_comments(open(os.path.join(ROOT, f["path"])).read())
        for m in re.finditer(CREATES, text):
            if takes_any_ids(text[m.end():]):
                continue
            found.setdefault(m.group(1), set()).add(name)
    return found


def referenced_objects(path):
    """Names of personalize.* objects the file's SQL names, comments aside."""
    text = strip_comments(open(os.path.join(ROOT, path)).read())
    return set(re.findall(OBJECT, text))


def main():
    files = sql_files()
    rust = {sql: f"api::{os.path.splitext(os.path.basename(path))[0]}::{fn}"
            for sql, (path, _, fn) in rust_functions().items()}
    defined = defined_objects(files)

    def closure(name, seen=None):
        seen = set() if seen is None else seen
        for r in files[name]["requires"]:
            if r not in seen:
                seen.add(r)
                if r in files:
                    closure(r, seen)
        return seen

    problems = []
    for name, f in files.items():
        if f["order"]:
            continue  # bootstrap comes first and finalize last, whatever they call
        needed = set()
        for obj in referenced_objects(f["path"]):
            if name in defined.get(obj, ()):
                continue  # its own
            if obj in rust:
                needed.add(rust[obj])
            needed |= {d for d in defined.get(obj, ()) if files[d]["order"] is None}
            if any(files[d]["order"] == "finalize" for d in defined.get(obj, ())):
                problems.append(f"{f['path']}: uses personalize.{obj}, which finalize.sql "
                                "defines after every other file")
        reachable = closure(name)
        for n in sorted(needed - reachable):
            problems.append(f"{f['path']}: uses what `{n}` defines, but its requires list "
                            "(src/lib.rs) does not reach it")
        if len(sys.argv) == 1:
            print(f"{name}: needs {sorted(needed)}; requires {f['requires']}")
    if "--check" in sys.argv:
        for p in problems:
            print(p, file=sys.stderr)
        if problems:
            sys.exit(1)


if __name__ == "__main__":
    main()

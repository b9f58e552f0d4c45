#!/usr/bin/env python3
"""The "SQL function -> Rust file" table of CONTRIBUTING.md, generated from the sources:
#[pg_extern]/#[pg_trigger] functions in src/api/*.rs and CREATE FUNCTION in sql/*.sql (the
install's hand-written SQL, not the upgrade scripts).

  scripts/function_table.py            prints the table
  scripts/function_table.py --check F  fails unless F holds it between its markers
  scripts/function_table.py --write F  replaces it there
"""
import glob
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
START, END = "<!-- function-table:start -->", "<!-- function-table:end -->"


def rust_functions():
    """SQL name -> (file, attribute, Rust fn name)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "src/api/*.rs"))):
        text = open(path).read()
        pattern = r"#\[pg_(extern|trigger)(\([^\]]*\))?\]\s*(?:#\[[^\]]*\]\s*)*(?:pub(?:\(crate\))? )?fn ([a-z_0-9]+)"
        for m in re.finditer(pattern, text):
            args = m.group(2) or ""
            if "sql = false" in args:
                continue
            named = re.search(r'name\s*=\s*"([a-z_0-9]+)"', args)
            sql_name = named.group(1) if named else m.group(3)
            found[sql_name] = (os.path.relpath(path, ROOT), m.group(1), m.group(3))
    return found


def sql_functions():
    """SQL name -> (file, language, body)."""
    found = {}
    for path in sorted(glob.glob(os.path.join(ROOT, "sql/*.sql"))):
        if os.path.basename(path).startswith("pg_personalize--"):
            continue
        text = open(path).read()
        for m in re.finditer(r"CREATE FUNCTION personalize\.([a-z_0-9]+)\(", text):
            end = text.find("$$;", text.find("$$", m.end()) + 2)
            body = text[m.start():end]
            language = re.search(r"LANGUAGE (\w+)", body).group(1)
            found[m.group(1)] = (os.path.relpath(path, ROOT), language, body)
    return found


def table():
    rust, sql = rust_functions(), sql_functions()
    rows = []
    for name in sorted(set(rust) | set(sql), key=lambda n: (n.startswith("_"), n)):
        if name in rust:
            path, attribute, fn = rust[name]
            where = f"`{path}`" + (f" (`fn {fn}`)" if fn != name else "")
            rows.append(f"| `personalize.{name}` | Rust, `#[pg_{attribute}]` | {where} |")
        else:
            path, language, body = sql[name]
            calls = sorted({c for c in re.findall(r"personalize\.([a-z_0-9]+)\(", body)
                            if c in rust and c != name})
            called = "; ".join(f"calls `{c}` in `{rust[c][0]}`" for c in calls) or "none"
            kind = {"sql": "SQL", "plpgsql": "PL/pgSQL"}.get(language.lower(), language)
            rows.append(f"| `personalize.{name}` | {kind} in `{path}` | {called} |")
    return "\n".join(["| SQL function | defined | Rust |", "| --- | --- | --- |"] + rows)


def main():
    generated = table()
    if len(sys.argv) == 1:
        print(generated)
        return
    mode, path = sys.argv[1], sys.argv[2]
    text = open(path).read()
    before, rest = text.split(START, 1)
    current, after = rest.split(END, 1)
    if mode == "--check":
        if current.strip() != generated.strip():
            sys.exit(f"{path}: the SQL function table is out of date; run "
                     f"scripts/function_table.py --write {path}")
    elif mode == "--write":
        open(path, "w").write(before + START + "\n" + generated + "\n" + END + after)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()

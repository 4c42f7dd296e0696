"""README.md and docs/*.md stay true: the commands of their code blocks run as written (scripts exist,
modules import, flags are known; nothing is trained: each script is only asked for --help, all in one
child process so that torch and RecBole are imported once) and every relative link and anchor resolves."""

import json
import re
import shlex
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MAX_README_LINES = 260
#: run_recbole_dns.py's own flags; every other --key=value is a config key
LAUNCHER_FLAGS = {"model", "dataset", "config_files", "resume", "nproc", "world_size", "ip", "port", "group_offset"}
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.M | re.S)
LINK = re.compile(r"\[[^\]]*\]\((?![a-z][a-z0-9+.-]*:)([^)\s]+)\)")  # relative links only (no http:, mailto:)
# Run in a child (cwd = ROOT): find_spec of each module, then each script's --help.
CHILD = r"""
import contextlib, importlib.util, io, json, os, runpy, sys, traceback
modules, scripts = json.loads(sys.argv[1])
out = {"modules": {m: importlib.util.find_spec(m) is not None for m in modules}, "help": {}}
for script in scripts:
    buf, ok, sys.argv, path0 = io.StringIO(), False, [script[-1], "--help"], sys.path[0]
    try:  # as `python SCRIPT --help` / `python -m MODULE --help`: sys.path[0] is the script's folder
        with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
            if script[0] == "-m":
                runpy.run_module(script[1], run_name="__main__", alter_sys=True)
            else:
                sys.path[0] = os.path.dirname(os.path.abspath(script[0]))
                runpy.run_path(script[0], run_name="__main__")
        buf.write("--help did not exit")
    except SystemExit as err:
        ok = err.code in (0, None)
    except BaseException:
        buf.write(traceback.format_exc(limit=-3))
    sys.path[0] = path0
    out["help"][" ".join(script)] = [ok, buf.getvalue()]
print(json.dumps(out))
"""


def commands(text: str) -> list[list[str]]:
    """argv of every `python ...`, `bash ...` or `recbole-dns experiments ...` command of the shell blocks."""
    out = []
    for block in (body for lang, body in FENCE.findall(text) if lang.strip() in ("", "bash", "sh", "console")):
        for line in block.replace("\\\n", " ").splitlines():
            for part in re.split(r"&&|\|\||;", line):
                argv = shlex.split(part, comments=True)
                if argv[:2] == ["recbole-dns", "experiments"]:
                    argv = ["python", "-m", "recbole_dns.experiments", *argv[2:]]
                if argv[:1] in (["python"], ["python3"], ["bash"]) and len(argv) > 1:
                    out.append(argv)
    return out


def all_commands() -> list[tuple[str, list[str]]]:
    return [(doc.name, argv) for doc in DOCS for argv in commands(doc.read_text(encoding="utf-8"))]


def flags(args: list[str]) -> list[str]:
    return [a.split("=", 1)[0] for a in args if a.startswith("--")]


def help_script(argv: list[str]) -> tuple[str, ...] | None:
    """The script whose --help a command's flags are checked against (argv after `python`), if any."""
    if argv[1:3] == ["-m", "recbole_dns.experiments"]:
        return tuple(argv[1:3])
    return (argv[1],) if re.fullmatch(r"tune/sweep\.py|benchmarks/\w+\.py", argv[1]) else None


@lru_cache(maxsize=None)
def child_report() -> dict:
    cmds = [argv for _, argv in all_commands()]
    modules = sorted({argv[2] for argv in cmds if argv[1] == "-m"})
    scripts = sorted({s for s in map(help_script, cmds) if s}, key=lambda s: (s[0] != "-m", s))  # module first
    proc = subprocess.run([sys.executable, "-c", CHILD, json.dumps([modules, scripts])], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: markup dropped, lower case, punctuation removed, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading).replace("`", "").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Anchors of a Markdown file's headings; a repeated heading gets -1, -2, ... as on GitHub."""
    found, counts = set(), {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", path.read_text(encoding="utf-8")), re.M):
        base = slug(heading)
        found.add(f"{base}-{counts[base]}" if base in counts else base)
        counts[base] = counts.get(base, 0) + 1
    return found


def broken_links(doc: Path) -> list[str]:
    bad = []
    for target in LINK.findall(FENCE.sub("", doc.read_text(encoding="utf-8"))):
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        if not file.exists():
            bad.append(f"{doc.name}: {target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in anchors(file):
            bad.append(f"{doc.name}: {target}: no heading with that anchor in {file.name}")
    return bad


@lru_cache(maxsize=None)
def config_keys() -> frozenset[str]:
    """Top-level keys of this package's properties YAML files and of RecBole's."""
    package = ROOT / "recbole_dns" / "properties"
    roots = [package if package.is_dir() else ROOT / "properties"]
    roots += [Path(p) / "recbole" / "properties" for p in sys.path if p and (Path(p) / "recbole").is_dir()]
    data = [yaml.safe_load(f.read_text(encoding="utf-8")) for root in roots for f in root.rglob("*.yaml")]
    return frozenset(key for d in data if isinstance(d, dict) for key in d)


def test_readme_is_short():
    n = len((ROOT / "README.md").read_text(encoding="utf-8").splitlines())
    assert n <= MAX_README_LINES, f"README.md has {n} lines; move reference material into docs/"


def test_links_and_anchors_resolve():
    bad = [b for doc in DOCS for b in broken_links(doc)]
    assert bad == [], "\n".join(bad)


def test_scripts_exist_and_modules_import():
    modules = child_report()["modules"]
    bad = [f"{doc}: {' '.join(argv[:3])}: no such module" if argv[1] == "-m" else f"{doc}: {argv[1]}: no such file"
           for doc, argv in all_commands()
           if (argv[1] == "-m" and not modules[argv[2]]) or (argv[1] != "-m" and not (ROOT / argv[1]).is_file())]
    assert bad == [], "\n".join(bad)


def test_flags_appear_in_help():
    helps = child_report()["help"]
    bad = [f"{script} --help failed:\n{text}" for script, (ok, text) in helps.items() if not ok]
    for doc, argv in all_commands():
        script = help_script(argv)
        ok, text = helps[" ".join(script)] if script else (False, "")
        bad += [f"{doc}: {' '.join(script)} {flag}: not in its --help" for flag in flags(argv[2:])
                if ok and not re.search(rf"(?<![\w-]){re.escape(flag)}(?![\w-])", text)]
    assert bad == [], "\n".join(dict.fromkeys(bad))


def test_run_recbole_dns_keys_are_known():
    bad = [f"{doc}: --{key}: neither a flag of run_recbole_dns.py nor a config key in a properties YAML"
           for doc, argv in all_commands() if argv[1] == "run_recbole_dns.py"
           for key in (flag[2:] for flag in flags(argv[2:])) if key not in LAUNCHER_FLAGS | config_keys()]
    assert bad == [], "\n".join(bad)

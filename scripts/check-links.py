#!/usr/bin/env python3
"""Check that every local link and image in README.md and docs/*.md resolves (files and #anchors)."""
import pathlib, re, sys

root = pathlib.Path(__file__).resolve().parent.parent
link = re.compile(r'!?\[[^\]]*\]\(([^)\s]+)\)')


def slugs(md):
    text = re.sub(r'```.*?```', '', md.read_text(), flags=re.S)
    return {re.sub(r'[^\w\- ]', '', h.strip().lower()).replace(' ', '-')
            for h in re.findall(r'^#+ (.*)$', text, flags=re.M)}


bad = checked = 0
for md in [root / 'README.md', *sorted((root / 'docs').glob('*.md'))]:
    text = re.sub(r'```.*?```', '', md.read_text(), flags=re.S)
    for target in link.findall(text):
        if re.match(r'[a-z]+:', target):
            continue
        path, _, anchor = target.partition('#')
        dest = (md.parent / path).resolve() if path else md
        checked += 1
        if not dest.exists():
            bad += 1
            print(f'{md.relative_to(root)}: missing {target}')
        elif anchor and dest.suffix == '.md' and anchor not in slugs(dest):
            bad += 1
            print(f'{md.relative_to(root)}: no heading #{anchor} in {path or md.name}')
print(f'{checked} local links checked, {bad} broken')
sys.exit(1 if bad else 0)

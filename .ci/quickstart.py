"""Print the README's quick-start commands: `python .ci/quickstart.py install|test`.

CI runs exactly what the README tells a user to run, so the two can never drift apart."""
import re, sys
from pathlib import Path

text = (Path(__file__).resolve().parent.parent/'README.md').read_text()
section = text.split('## Quick start', 1)[1].split('\n## ', 1)[0]
blocks = re.findall(r'```sh\n(.+?)\n```', section, re.S)
if len(blocks) != 2: sys.exit(f'README quick start must hold exactly two sh blocks, found {len(blocks)}')
print(dict(install=blocks[0], test=blocks[1])[sys.argv[1]])

"""Make a smalldocs-rendered site link like the published one, offline too.

smalldocs names pages after the notebooks (`01_model.html`) and ignores nbdev's `output-file` front matter
(`model.html`), while nbdev writes its cross-references as absolute links to the published site
(`https://medsft.github.io/medsft/model.html#finish_folder`). This renames each page to its `output-file`, as
Quarto does, and rewrites links to the site's own pages as relative links, so they resolve offline and online."""
import json, re, sys
from pathlib import Path
from nbdev.config import get_config

cfg = get_config()
site, proc = Path(sys.argv[1] if len(sys.argv) > 1 else "_docs"), Path(sys.argv[2] if len(sys.argv) > 2 else "_proc")
rename = {}
for nb in sorted(proc.glob("*.ipynb")):
    head = "".join(json.loads(nb.read_text(encoding="utf-8"))["cells"][0]["source"])
    if m := re.search(r"^output-file:\s*(\S+)", head, re.M):
        if (site/f"{nb.stem}.html").exists() and m[1] != f"{nb.stem}.html": rename[f"{nb.stem}.html"] = m[1]
for old, new in rename.items(): (site/old).rename(site/new)
own = re.escape(f"{cfg.doc_host.rstrip('/')}{cfg.doc_baseurl.rstrip('/')}/")
pages = "|".join(map(re.escape, rename))
for f in [*site.glob("*.html"), *site.glob("*.json"), *site.glob("*.xml")]:
    text = f.read_text(encoding="utf-8")
    new = re.sub(rf'(href=\\?"){own}', r"\1", text)
    if pages: new = re.sub(rf'(href=\\?"|"href":\s*")({pages})', lambda m: m[1] + rename[m[2]], new)
    if new != text: f.write_text(new, encoding="utf-8")
print(f"site links: {len(rename)} pages renamed as Quarto names them; links to {cfg.doc_host}{cfg.doc_baseurl} made relative")

"""Write README.md from nbs/index.ipynb without quarto: front matter → title, `#|` lines and hidden cells dropped,
links made relative to the repository root. (nbdev_readme needs quarto, which cannot be installed here.)"""
import re, sys, nbformat
from nbconvert import MarkdownExporter

def main(src, dst):
    nb = nbformat.read(src, as_version=4)
    cells = []
    for c in nb.cells:
        if c.cell_type == 'code' and re.search(r'^#\|\s*(hide|export)', c.source, re.M): continue
        c.source = '\n'.join(l for l in c.source.splitlines() if not l.startswith('#|'))
        cells.append(c)
    first = cells[0].source if cells else ''
    m = re.match(r'# (.+)\n+> (.+)', first)
    if m: cells[0].source = f'# {m.group(1)}\n\n{m.group(2)}' + first[m.end():]
    nb.cells = cells
    body, _ = MarkdownExporter().from_notebook_node(nb)
    body = re.sub(r'\n{3,}', '\n\n', body).strip() + '\n'
    body = re.sub(r'\]\((?!https?:|mailto:|#|/|\.\./)([^)\s]+)\)', r'](nbs/\1)', body)  # links between notebooks, seen from the root
    body = body.replace('](../', '](')
    open(dst, 'w', encoding='utf-8').write('<!-- generated from nbs/index.ipynb by `make readme`: edit the notebook -->\n' + body)

if __name__ == '__main__': main(*sys.argv[1:3])

"""`nbdev_proc_nbs` without its Quarto installer: nbdev 2.4's CLI tries `sudo` + curl to install Quarto and
then reinstalls the package with whatever `pip` is first on PATH. These are the same steps, minus that."""
import sys
import nbdev.doclinks
from nbdev.config import get_config
from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar, proc_nbs

cfg = get_config()
refresh_quarto_yml()
nbdev.doclinks._build_modidx()
nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
proc_nbs(cfg.nbs_path, n_workers=int(sys.argv[1]) if len(sys.argv) > 1 else 0, force=True)

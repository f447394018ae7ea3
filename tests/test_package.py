"""The installed package: import, version, console scripts and their --help."""
import configparser, re, subprocess
from importlib.metadata import entry_points, version
import pytest
from fastcore.test import test_eq as eq

def _settings(root):
    cfg = configparser.ConfigParser(delimiters=['=']); cfg.read(root/'settings.ini', encoding='utf-8')
    return cfg['DEFAULT']

def test_version_matches_settings(root):
    import medsft
    eq(medsft.__version__, _settings(root)['version'])
    eq(version('medsft'), _settings(root)['version'])

def test_console_scripts_registered(root):
    declared = {l.split('=')[0].strip() for l in _settings(root)['console_scripts'].split()}
    installed = {e.name for e in entry_points(group='console_scripts') if e.value.startswith('medsft.')}
    eq(declared - installed, set())

TRAINER_FLAGS = pytest.mark.slow  # their --help imports transformers (every TrainingArguments field is a flag): ~7 s

@pytest.mark.parametrize('name', ['medsft_data', 'medsft_download', pytest.param('medsft_train', marks=TRAINER_FLAGS),
                                  pytest.param('medsft_train_lora', marks=TRAINER_FLAGS), 'medsft_merge',
                                  'medsft_predict', 'medsft_eval', 'medsft_bench', 'medsft_serve'])
def test_cli_help(name):
    "The installed console script itself starts and answers --help (every flag: test_cli)."
    r = subprocess.run([name, '--help'], capture_output=True, text=True, encoding='utf-8')
    eq(r.returncode, 0)
    assert 'usage' in r.stdout.lower(), r.stdout + r.stderr

def test_public_modules_import():
    for m in ['data', 'model', 'train_full', 'train_lora', 'inference', 'scaling', 'commands', 'serve']:
        mod = __import__(f'medsft.{m}', fromlist=['__all__'])
        assert mod.__all__, f'medsft.{m} exports nothing'

def test_readme_says_how_to_open_the_notebooks(root):
    "No Jupyter comes with medsft: the README names `make notebooks`, and the Makefile has that target."
    assert 'make notebooks' in (root/'README.md').read_text(encoding='utf-8')
    assert re.search(r'^notebooks:', (root/'Makefile').read_text(encoding='utf-8'), re.M)

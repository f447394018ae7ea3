"""The installed package: import, version, console scripts and their --help."""
import configparser, subprocess
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

@pytest.mark.parametrize('name', ['medsft_data', 'medsft_download', 'medsft_train', 'medsft_train_lora',
                                  'medsft_merge', 'medsft_predict', 'medsft_eval'])
def test_cli_help(name):
    r = subprocess.run([name, '--help'], capture_output=True, text=True, encoding='utf-8')
    eq(r.returncode, 0)
    assert 'usage' in r.stdout.lower(), r.stdout + r.stderr

def test_public_modules_import():
    for m in ['data', 'model', 'train_full', 'train_lora', 'inference', 'scaling']:
        mod = __import__(f'medsft.{m}', fromlist=['__all__'])
        assert mod.__all__, f'medsft.{m} exports nothing'

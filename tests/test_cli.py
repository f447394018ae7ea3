"""One grammar for every console script in settings.ini: both spellings of every flag parse, `--help` shows every
docment as written, a user error is one line on stderr with exit status 2, and output survives a console whose
encoding is not UTF-8."""
import configparser, importlib, json, os, subprocess, sys
from pathlib import Path
import pytest
from medsft.cli import _convert, flags_of, mapping

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

def scripts()->dict:
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return dict(line.strip().split('=') for line in cfg['DEFAULT']['console_scripts'].split())

def command(target):
    mod, fn = target.split(':')
    return getattr(importlib.import_module(mod), fn)

def sample_value(flag)->list:
    t, nargs, choices = _convert(flag.type)
    if t is bool: return []
    if choices: return [str(choices[0])]
    return [{int: '1', float: '0.5', mapping: 'a=b'}.get(t, 'x')]

@pytest.mark.parametrize('name,target', scripts().items())
def test_flags_and_help(name, target):
    cmd = command(target)
    assert hasattr(cmd, 'parser') and hasattr(cmd, 'spec'), f'{name} is not built with medsft.cli.command'
    parser, flags = cmd.parser(), flags_of(cmd.spec)
    shown = ' '.join(parser.format_help().split())
    required = [w for f in flags if f.required for w in (f'--{f.name.replace("_", "-")}', *sample_value(f))]
    for f in flags:
        assert ' '.join(f.help.split()) in shown, f'{name} --help does not show the docment of {f.name}: {f.help!r}'
        for spelling in {f.name.replace('_', '-'), f.name}:
            ns = parser.parse_args([f'--{spelling}', *sample_value(f), *required])
            assert f.name in vars(ns), (name, spelling)

BAD = {'medsft_data': ['--source', '不存在.jsonl'], 'medsft_download': ['--model-id', '不存在'],
       'medsft_train': ['--model', '不存在', '--output-dir', '{tmp}/o'],
       'medsft_train_lora': ['--model', '不存在', '--output-dir', '{tmp}/o'],
       'medsft_merge': ['--adapter-dir', '不存在', '--out-dir', '{tmp}/o'],
       'medsft_predict': ['-i', '头痛怎么办？', '-c', '不存在'], 'medsft_eval': ['-c', '不存在', '--val-file', '不存在.jsonl'],
       'medsft_bench': ['--model', '不存在']}

@pytest.mark.parametrize('name', scripts())
def test_error_is_one_line_on_any_console(name, tmp_path):
    "A bad path with Chinese in it, on an ASCII console: exit 2, one UTF-8 line on stderr naming it, no traceback."
    assert name in BAD, f'add a bad-input case for {name}'
    env = {**os.environ, 'PYTHONIOENCODING': 'ascii', 'SWANLAB_MODE': 'disabled', 'MODELSCOPE_DOMAIN': 'http://127.0.0.1:9'}
    args = [a.replace('{tmp}', str(tmp_path)) for a in BAD[name]]
    r = subprocess.run([str(BIN/name), *args], capture_output=True, env=env, cwd=tmp_path, timeout=300)
    err = r.stderr.decode('utf-8').strip()
    assert r.returncode == 2 and 'Traceback' not in err, (r.returncode, err[-2000:])
    assert len(err.splitlines()) == 1 and err.startswith(f'{name}: error:') and '不存在' in err, err

def test_chinese_output_on_ascii_console(tmp_path):
    "Commands print Chinese questions and answers even when the console cannot encode them."
    env = {**os.environ, 'PYTHONIOENCODING': 'ascii', 'SWANLAB_MODE': 'disabled'}
    r = subprocess.run([str(BIN/'medsft_predict'), '-i', '头痛怎么办？', '-c', 'tiny-qwen3', '-m', '4', '--greedy', '--json'],
                       capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr.decode('utf-8', 'replace')[-2000:]
    assert json.loads(r.stdout.decode('utf-8'))['question'] == '头痛怎么办？'

def test_data_path_under_c_locale(tmp_path):
    "Every file medsft_data reads or writes names its encoding: the C locale (ASCII) changes nothing."
    env = {**os.environ, 'LC_ALL': 'C', 'LANG': 'C', 'PYTHONUTF8': '0', 'PYTHONCOERCECLOCALE': '0',
           'PYTHONIOENCODING': 'ascii'}
    r = subprocess.run([str(BIN/'medsft_data'), '--source', 'sample', '--out-dir', str(tmp_path/'out')],
                       capture_output=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr.decode('utf-8', 'replace')[-2000:]
    rows = [json.loads(l) for l in (tmp_path/'out'/'val.jsonl').read_text(encoding='utf-8').splitlines()]
    assert rows and all('\\u' not in json.dumps(r, ensure_ascii=False) for r in rows)
    assert any('\u4e00' <= ch <= '\u9fff' for ch in rows[0]['question'])

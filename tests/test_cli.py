"""One grammar for every console script in settings.ini: both spellings of every flag parse, `--help` shows every
docment as written, a user error is one line on stderr with exit status 2, and output survives a console whose
encoding is not UTF-8."""
import configparser, importlib, io, json, os, subprocess, sys
from pathlib import Path
import pytest
from medsft.cli import _convert, flags_of, mapping
from conftest import cli

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
       'medsft_bench': ['--model', '不存在'], 'medsft_serve': ['-c', '不存在']}

@pytest.mark.parametrize('name', scripts())
def test_error_is_one_line_on_any_console(name, tmp_path, monkeypatch):
    """A bad path with Chinese in it, on an ASCII console: exit 2, one UTF-8 line on stderr naming it, no traceback.
    In this process, with stdout/stderr made ASCII streams as `PYTHONIOENCODING=ascii` makes them (a real process
    with that console: `test_data_error_in_a_real_ascii_process`, and test_inference's `--json` test)."""
    assert name in BAD, f'add a bad-input case for {name}'
    for k, v in {'SWANLAB_MODE': 'disabled', 'MODELSCOPE_DOMAIN': 'http://127.0.0.1:9'}.items(): monkeypatch.setenv(k, v)
    monkeypatch.delenv('MEDSFT_DEBUG', raising=False)
    monkeypatch.chdir(tmp_path)
    out, err = io.BytesIO(), io.BytesIO()
    monkeypatch.setattr(sys, 'stdout', io.TextIOWrapper(out, encoding='ascii'))
    monkeypatch.setattr(sys, 'stderr', io.TextIOWrapper(err, encoding='ascii'))
    with pytest.raises(SystemExit) as e: command(scripts()[name]).main([a.replace('{tmp}', str(tmp_path)) for a in BAD[name]])
    sys.stderr.flush()
    text = err.getvalue().decode('utf-8').strip()
    assert e.value.code == 2 and 'Traceback' not in text, (e.value.code, text[-2000:])
    assert len(text.splitlines()) == 1 and text.startswith(f'{name}: error:') and '不存在' in text, text

def test_data_error_in_a_real_ascii_process(tmp_path):
    "The same contract in a real process whose console is ASCII (`medsft_data`: it starts in about a second)."
    env = {**os.environ, 'PYTHONIOENCODING': 'ascii'}
    r = subprocess.run([str(BIN/'medsft_data'), *BAD['medsft_data']], capture_output=True, env=env, cwd=tmp_path, timeout=300)
    err = r.stderr.decode('utf-8').strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and '不存在' in err, (r.returncode, err[-2000:])

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

def _options(name)->dict:
    "option string -> argparse action of a console script's parser (hidden spellings included)."
    return {o: a for a in command(scripts()[name]).parser()._actions for o in a.option_strings}

def test_one_name_per_concept():
    "A folder that results go to is --output-dir (-o) in every command, --out-dir only a hidden alias; a row limit is -n/--limit."
    for name in scripts():
        opts, shown = _options(name), command(scripts()[name]).parser().format_help()
        if '--out-dir' in opts: assert opts['--out-dir'].dest == 'output_dir' and '--out-dir' not in shown, name
        if '--output-dir' in opts and '-o' in opts: assert opts['-o'].dest == 'output_dir', name
        if '-n' in opts: assert opts['-n'].dest == 'limit' and opts['--limit'] is opts['-n'], name
    for name in ('medsft_predict', 'medsft_eval'):  # one default that lets a thinking answer finish
        default = next(f.default for f in flags_of(command(scripts()[name]).spec) if f.name == 'max_new_tokens')
        assert default == 1024, (name, default)

def test_readme_flags_exist_and_are_current(root):
    "Every `--flag` the README shows is a flag of some command, and none is a deprecated spelling."
    import re
    text = (root/'README.md').read_text(encoding='utf-8')
    flags = set(re.findall(r'(?<![\w-])(--[a-z][a-z0-9-]+)', text)) - {'--index-url',  # pip's
        '--dashed-flags', '--underscored'}  # the README's words for the two spellings of every flag
    every = {}
    for name in scripts(): every |= _options(name)
    for f in sorted(flags):
        assert f in every, f'README shows {f}, which no command accepts'
        assert 'deprecated' not in (every[f].help or '').lower(), f'README recommends a deprecated flag: {f}'


def test_run_file_read_strictly(tmp_path):
    "Issue 22 §2: a key given twice names both lines; a non-UTF-8 byte names its line and the fix; a BOM is dropped."
    from medsft.cli import read_config
    from medsft.train_full import medsft_train
    spec = medsft_train.spec
    (tmp_path/'twice.yaml').write_text('learning_rate: 1e-4\nseed: 1\nlearning_rate: 5\n', encoding='utf-8')
    with pytest.raises(ValueError, match=r"twice.yaml: key 'learning_rate' is given twice \(lines 1 and 3\)"):
        read_config(tmp_path/'twice.yaml', spec)
    (tmp_path/'twice.json').write_text('{"learning_rate": 1e-4,\n"seed": 1,\n\n"learning_rate": 5}', encoding='utf-8')
    with pytest.raises(ValueError, match=r"twice.json: key 'learning_rate' is given twice \(lines 1 and 4\)"):
        read_config(tmp_path/'twice.json', spec)
    (tmp_path/'gbk.yaml').write_bytes('seed: 1\nsystem: 你是医生\n'.encode('gbk'))
    with pytest.raises(ValueError, match=r'gbk.yaml: line 2 is not UTF-8 \(byte 0xc4\); save the file as UTF-8'):
        read_config(tmp_path/'gbk.yaml', spec)
    for name, text in (('bom.yaml', 'seed: 7\nsystem: 你是医生\n'), ('bom.json', '{"seed": 7, "system": "你是医生"}')):
        (tmp_path/name).write_text('\ufeff' + text, encoding='utf-8')
        assert read_config(tmp_path/name, spec) == dict(seed=7, system='你是医生')
    # through the command: the one-line, exit-2 error path
    r = cli(medsft_train, '--config', tmp_path/'twice.yaml')
    assert r.returncode == 2 and r.stderr.count('\n') == 1 and 'lines 1 and 3' in r.stderr, r.stderr

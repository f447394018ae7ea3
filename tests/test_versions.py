"""The declared dependency floors are versions the suite has run on, and greedy decoding is greedy on them."""
import configparser
from importlib.metadata import version
from pathlib import Path
from packaging.requirements import Requirement
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent

def requirements()->list:
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini', encoding='utf-8')
    return [Requirement(r) for r in cfg['DEFAULT']['requirements'].split()]

def test_floors_are_tested_versions():
    "Each floor is at most the installed version (what this run tests) and at least its major.minor: no untested range."
    for req in requirements():
        floor = next(Version(s.version) for s in req.specifier if s.operator == '>=')
        have = Version(version(req.name).split('+')[0])
        assert floor <= have, f'{req.name}: floor {floor} above the installed {have}'
        assert (floor.major, floor.minor) == (have.major, have.minor), \
            f'{req.name}: floor {floor} allows versions no test ran on (installed {have}); raise the floor'

def test_greedy_is_greedy():
    "Greedy decoding gives the same text whatever the seed (the checkpoint's sampling defaults must not leak in)."
    from medsft.inference import predict
    qs = ['高血压如何饮食？', '感冒需要吃抗生素吗？']
    outs = [predict(qs, checkpoint='tiny-qwen3', max_new_tokens=12, do_sample=False, seed=s, device='cpu') for s in (0, 1, 2)]
    assert outs[0] == outs[1] == outs[2]
    sampled = [predict(qs, checkpoint='tiny-qwen3', max_new_tokens=12, seed=s, device='cpu') for s in (0, 1)]
    assert sampled[0] != sampled[1], 'sampling with different seeds gave the same text: is do_sample ignored?'

"""One think/answer rule (issue 15 §1): every path that reads an assistant text agrees with `parse_assistant` on the
same table of edge cases: generated text (`parse_response`, `stream_parts`), data rows (`normalize_rows`), chat
messages (plain and `reasoning_content`), and Qwen3's chat template itself."""
import pytest
from medsft.data import normalize_rows
from medsft.chat import think_and_answer
from medsft.chat import parse_assistant, render_assistant
from medsft.chat import parse_response, stream_parts
from medsft.model import embedded_tokenizer

CASES = {  # text -> (think, answer, closed)
    'no think': ('直接回答。', ('', '直接回答。', None)),  # no think block: closed is None
    'empty think': ('<think>\n\n</think>\n\n直接回答。', ('', '直接回答。', True)),
    'think': ('<think>\n想一想\n</think>\n\n回答。', ('想一想', '回答。', True)),
    'unclosed think': ('<think>\n还在想', ('还在想', '', False)),
    'text after a second </think>': ('<think>a</think>b</think>c', ('a', 'c', True)),
    'stray <think> in the answer': ('<think>a</think>答<think>b', ('a', '答<think>b', True)),
    'spaces around the tags': ('  <think> a </think>  b  ', ('a', 'b', True)),
    'extra newlines': ('<think>\n\n a\n\n</think>\n\n\n b\n', ('a', 'b', True)),
}

@pytest.mark.parametrize('name', CASES)
def test_generated_text(name):
    text, want = CASES[name]
    assert tuple(parse_assistant(text).values()) == want
    r = parse_response(text, stopped=True)
    assert (r['think'], r['answer'], r['closed'], r['finished']) == (*want, want[2] is not False)
    for size in range(1, len(text) + 1):
        parts = {'think': '', 'answer': ''}
        for part, piece in stream_parts(text[i:i + size] for i in range(0, len(text), size)):
            parts[part] = '' if piece is None else parts[part] + piece
        assert (parts['think'].strip(), parts['answer'].strip()) == want[:2], (name, size, parts)

@pytest.mark.parametrize('name', [n for n, (_, w) in CASES.items() if w[2] is not False])
def test_data_rows_and_messages(name):
    "Closed texts: a stored completion, an assistant message and the chat template split them the same way."
    text, (think, answer, _) = CASES[name]
    row = normalize_rows([{'prompt': 'Q', 'completion': text}])[0]
    assert (row['think'], row['answer']) == ((think, answer) if '</think>' in text else ('', text))
    assert tuple(s.strip() for s in think_and_answer({'role': 'assistant', 'content': text})) == \
        ((think, answer) if '</think>' in text else ('', text.strip()))
    rc = {'role': 'assistant', 'content': answer, 'reasoning_content': think}
    assert tuple(s.strip() for s in think_and_answer(rc)) == (think, answer)
    tok = embedded_tokenizer()
    rendered = tok.apply_chat_template([{'role': 'user', 'content': 'Q'}, {'role': 'assistant', 'content': text}],
                                       tokenize=False)
    turn = rendered.split('<|im_start|>assistant\n')[-1].split('<|im_end|>')[0]
    assert tuple(parse_assistant(turn).values())[:2] == ((think, answer) if '</think>' in text else ('', text.strip()))
    assert parse_assistant(render_assistant(think, answer))['answer'] == answer

"""`medsft_serve` against real clients: the `openai` library and a headless Chromium, on a server started in this
process (full folder, LoRA adapter by name, and a scripted model that writes a think block), plus the bad inputs
of issue 23 and the files vLLM reads from medsft's folders."""
import http.client, json, os, shutil, time, urllib.error, urllib.request
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlparse
import pytest
from conftest import cli

openai = pytest.importorskip('openai')

Q = '高血压患者饮食上要注意什么？'

class Script:
    """A logits processor that makes the tiny model write Qwen3's reply shape: `<think>\\n`, 4 free tokens, `\\n</think>
    \\n\\n`, 11 free answer tokens, `<|im_end|>` (21 new tokens). Free tokens are the model's own choice among ordinary
    tokens."""
    def __init__(self):
        from medsft.model import IM_END_ID, THINK_END_ID, THINK_START_ID
        self.plan, self.start = {0: THINK_START_ID, 1: 198, 6: 198, 7: THINK_END_ID, 8: 271, 20: IM_END_ID}, None
    def __call__(self, input_ids, scores):
        import torch
        self.start = self.start or input_ids.shape[1]
        scores = scores.clone()
        if (tok := self.plan.get(input_ids.shape[1] - self.start)) is not None:
            scores[:] = -torch.inf
            scores[:, tok] = 0
        else:  # ordinary tokens only: no special ones, no bare newlines
            scores[:, 151643:] = -torch.inf
            scores[:, [198, 271]] = -torch.inf
        return scores

def thinking_predictor(folder):
    "A `Predictor` on `folder` whose every `generate` call follows `Script`."
    from transformers import LogitsProcessorList
    from medsft.inference import Predictor
    pred = Predictor(str(folder), device='cpu')
    generate = pred.model.generate
    pred.model.generate = lambda *a, **k: generate(*a, logits_processor=LogitsProcessorList([Script()]), **k)
    return pred

@pytest.fixture(scope='module')
def engine(trained):
    from medsft.serve import Engine
    engine = Engine({'full': str(trained['full']), 'lora': str(trained['lora']),
                     'think': thinking_predictor(trained['full'])}, batch_wait=0.05, device='cpu')
    yield engine
    engine.close()

@pytest.fixture(scope='module')
def server(engine):
    from medsft.serve import build_app, serve_in_thread, stop_server
    server = serve_in_thread(build_app(engine))
    yield server
    stop_server(server)

@pytest.fixture(scope='module')
def client(server): return openai.OpenAI(base_url=server.url + '/v1', api_key='-', max_retries=0)

RP = 2.0  # greedy with a repetition penalty: the tiny models write varied text instead of newlines only

def ask(client, model='full', question=Q, **kw):
    kw = {'max_tokens': 16, 'temperature': 0, **kw}
    kw['extra_body'] = {'repetition_penalty': RP, **kw.get('extra_body', {})}
    return client.chat.completions.create(model=model, messages=[{'role': 'user', 'content': question}], **kw)

def streamed(client, model='full', question=Q, **kw)->dict:
    "A streamed reply, put together: reasoning, content, finish_reason, usage, reasoning (newer name)."
    out = dict(reasoning='', content='', finish_reason=None, usage=None, reasoning_new='')
    for c in ask(client, model, question, stream=True, stream_options={'include_usage': True}, **kw):
        if c.usage: out['usage'] = c.usage
        if not c.choices: continue
        d = c.choices[0].delta
        out['reasoning'] += getattr(d, 'reasoning_content', None) or ''
        out['reasoning_new'] += getattr(d, 'reasoning', None) or ''
        out['content'] += d.content or ''
        out['finish_reason'] = c.choices[0].finish_reason or out['finish_reason']
    return out

def post(url, body, headers=None):
    "(status, headers, parsed JSON) of a raw POST (bytes or an object)."
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data, {'Content-Type': 'application/json', **(headers or {})})
    try:
        with urllib.request.urlopen(req) as r: return r.status, r.headers, json.loads(r.read())
    except urllib.error.HTTPError as e: return e.code, e.headers, json.loads(e.read())

def get(url, headers=None):
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {})) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e: return e.code, e.read().decode()

def open_stream(server, body):
    "A raw streaming request whose connection the test closes itself: (connection, response)."
    u = urlparse(server.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=60)
    conn.request('POST', '/v1/chat/completions', json.dumps({**body, 'stream': True}),
                 {'Content-Type': 'application/json'})
    return conn, conn.getresponse()

def events(resp):
    "The `data:` payloads of a server-sent event stream, as they arrive."
    while line := resp.readline():
        if line.startswith(b'data: '): yield line[6:].strip().decode()

def answer_of(text): 
    from medsft.inference import parse_response
    return parse_response(text)['answer']

def test_models_and_health(server, client):
    assert [m.id for m in client.models.list().data] == ['full', 'lora', 'think']
    status, text = get(server.url + '/health')
    assert status == 200 and json.loads(text)['status'] == 'ok'
    status, page = get(server.url + '/')
    assert status == 200 and 'text/event-stream' not in page and '不能替代医生' in page

@pytest.mark.parametrize('model', ['think', 'full', 'lora'])
def test_streamed_equals_plain(client, model):
    "The reasoning and the answer, streamed and not, from a full folder, an adapter by name and a thinking model."
    plain = ask(client, model, max_tokens=32)
    msg, got = plain.choices[0].message, streamed(client, model, max_tokens=32)
    assert msg.content.strip()
    assert (got['reasoning'], got['content']) == (msg.reasoning_content or '', msg.content)
    assert got['reasoning_new'] == got['reasoning'] and msg.reasoning == msg.reasoning_content
    assert got['finish_reason'] == plain.choices[0].finish_reason
    assert got['usage'].model_dump() == plain.usage.model_dump()
    if model == 'think':  # the scripted reply: a think block of 4 tokens, an answer, the terminator
        assert msg.reasoning_content and msg.content and '<think>' not in msg.content + msg.reasoning_content
        assert (plain.choices[0].finish_reason, plain.usage.completion_tokens) == ('stop', 21)

def test_stream_ends_with_done(server):
    conn, resp = open_stream(server, {'model': 'think', 'messages': [{'role': 'user', 'content': Q}],
                                      'max_tokens': 8, 'temperature': 0})
    assert resp.status == 200 and resp.getheader('content-type').startswith('text/event-stream')
    data = list(events(resp))
    conn.close()
    assert data[-1] == '[DONE]' and json.loads(data[-2])['choices'][0]['finish_reason'] == 'length'

@pytest.mark.parametrize('max_tokens,finish', [(64, 'stop'), (5, 'length')])
def test_finish_reason(client, max_tokens, finish):
    plain, got = ask(client, 'think', max_tokens=max_tokens), streamed(client, 'think', max_tokens=max_tokens)
    assert plain.choices[0].finish_reason == got['finish_reason'] == finish
    assert plain.usage.completion_tokens == (21 if finish == 'stop' else max_tokens)
    if finish == 'length':  # cut inside the think block: no answer yet
        assert plain.choices[0].message.content == got['content'] == ''
        assert plain.choices[0].message.reasoning_content == got['reasoning'] != ''

def test_stop_strings(client):
    full = ask(client, max_tokens=24).choices[0].message.content
    assert len(full) > 10, full
    stop = full[6:8]
    cut = full[:full.find(stop)].strip()
    plain, got = ask(client, max_tokens=24, stop=[stop, '不会出现的字符串']), streamed(client, max_tokens=24, stop=stop)
    assert plain.choices[0].message.content == got['content'] == cut
    assert plain.choices[0].finish_reason == got['finish_reason'] == 'stop'
    assert ask(client, max_tokens=24, stop='不会出现的字符串').choices[0].finish_reason == 'length'

def test_thinking_off(client, trained):
    from medsft.inference import predict
    on = ask(client)
    off = ask(client, extra_body={'chat_template_kwargs': {'enable_thinking': False}})
    assert off.usage.prompt_tokens == on.usage.prompt_tokens + 4  # the template's empty `<think>\n\n</think>\n\n`
    expect = predict(Q, str(trained['full']), max_new_tokens=16, do_sample=False, enable_thinking=False,
                     repetition_penalty=RP)
    assert off.choices[0].message.content == answer_of(expect) != '' and off.choices[0].message.reasoning_content is None

def test_earlier_turns(client, trained):
    "Earlier turns are rendered as `predict` renders a `messages` list (with medsft's system prompt first)."
    from medsft.data import DEFAULT_SYSTEM_PROMPT
    from medsft.inference import predict
    turns = [{'role': 'user', 'content': Q}, {'role': 'assistant', 'content': '少吃盐。'},
             {'role': 'user', 'content': '那运动呢？'}]
    reply = client.chat.completions.create(model='full', messages=turns, max_tokens=16, temperature=0,
                                           extra_body={'repetition_penalty': RP})
    expect = predict([{'role': 'system', 'content': DEFAULT_SYSTEM_PROMPT}, *turns], str(trained['full']),
                     max_new_tokens=16, do_sample=False, repetition_penalty=RP)
    assert reply.choices[0].message.content == answer_of(expect) != ''
    assert reply.usage.prompt_tokens > ask(client).usage.prompt_tokens

def test_sixteen_concurrent_clients(client, engine, trained):
    """16 clients at once (two models, each with its own max_tokens): every greedy answer equals the same question
    asked alone and `medsft_predict`'s; the engine did batch them."""
    from medsft.commands import medsft_predict
    from medsft.data import sample_rows
    qs = [r['question'] for r in sample_rows()][:16]
    jobs = [('full' if i % 2 else 'lora', q, 8 + i) for i, q in enumerate(qs)]
    call = lambda job: ask(client, job[0], job[1], max_tokens=job[2])
    alone = [call(j) for j in jobs]
    before = len(engine.batches)
    with ThreadPoolExecutor(16) as pool: together = list(pool.map(call, jobs))
    assert [r.choices[0].message.content for r in together] == [r.choices[0].message.content for r in alone]
    assert len({r.choices[0].message.content for r in alone}) > 8  # varied, not empty: a real comparison
    assert [r.usage.completion_tokens for r in together] == [j[2] for j in jobs]  # the tiny model never stops
    assert max(engine.batches[before:]) > 1
    for (model, q, m), reply in list(zip(jobs, alone))[:4]:
        out = cli(medsft_predict, '-i', q, '-c', trained[model], '-m', m, '--greedy', '--repetition-penalty', RP)
        assert out.returncode == 0 and answer_of(out.stdout) == reply.choices[0].message.content

def test_disconnect_stops_generation(server, engine):
    conn, resp = open_stream(server, {'model': 'full', 'messages': [{'role': 'user', 'content': Q}],
                                      'max_tokens': 5000, 'temperature': 0})
    data = events(resp)
    first = json.loads(next(data))
    for _ in range(3): next(data)  # some text has come: it is generating
    conn.close()
    for _ in range(600):
        record = next((r for r in list(engine.records) if r['id'] == first['id']), None)
        if record: break
        time.sleep(0.1)
    assert record and record['cancelled'] and record['new_tokens'] < 5000, record

def test_queue_full_is_503(server, engine, client, monkeypatch):
    monkeypatch.setattr(engine, 'max_pending', 2)
    body = {'model': 'full', 'messages': [{'role': 'user', 'content': Q}], 'max_tokens': 5000, 'temperature': 0}
    streams = [open_stream(server, body) for _ in range(2)]
    for _, resp in streams: next(events(resp))  # admitted (the role chunk comes before any generation)
    status, headers, err = post(server.url + '/v1/chat/completions', {**body, 'max_tokens': 4})
    assert status == 503 and headers['Retry-After'] and err['error']['code'] == 'queue_full'
    for conn, _ in streams: conn.close()
    for _ in range(600):
        if engine.pending == 0: break
        time.sleep(0.1)
    assert ask(client).choices[0].finish_reason == 'length'

def long_prompt(n=45_000)->str: return ''.join(chr(0x4e00 + (i * 7919) % 20000) for i in range(n))

BAD = [(b'{"model": "full", "messages": [', 400, None),
       (b'[1, 2]', 400, None),
       ({'model': 'full'}, 400, 'messages'),
       ({'messages': []}, 400, 'messages'),
       ({'messages': [{'role': 'doctor', 'content': Q}]}, 400, 'messages[0].role'),
       ({'messages': [{'role': 'user', 'content': [{'type': 'text', 'text': Q}]}]}, 400, 'messages[0].content'),
       ({'messages': [{'role': 'user', 'content': None}]}, 400, 'messages[0].content'),
       ({'messages': [{'role': 'user', 'content': long_prompt()}]}, 400, 'messages'),
       ({'messages': [{'role': 'user', 'content': Q}], 'max_tokens': 0}, 400, 'max_tokens'),
       ({'messages': [{'role': 'user', 'content': Q}], 'max_tokens': -3}, 400, 'max_tokens'),
       ({'messages': [{'role': 'user', 'content': Q}], 'max_tokens': '8'}, 400, 'max_tokens'),
       ({'messages': [{'role': 'user', 'content': Q}], 'n': 2}, 400, 'n'),
       ({'messages': [{'role': 'user', 'content': Q}], 'temperature': 7}, 400, 'temperature'),
       ({'messages': [{'role': 'user', 'content': Q}], 'stop': ['']}, 400, 'stop'),
       ({'messages': [{'role': 'user', 'content': Q}], 'model': 'gpt-4'}, 404, 'model'),
       ({'messages': [{'role': 'user', 'content': Q}], 'model': '/etc'}, 404, 'model')]

def test_bad_input_then_good(server, client):
    for body, status, param in BAD:
        got, _, err = post(server.url + '/v1/chat/completions', body)
        assert (got, err['error']['param']) == (status, param), (body if isinstance(body, bytes) else str(body)[:200], err)
        assert set(err['error']) == {'message', 'type', 'param', 'code'} and err['error']['message']
    with pytest.raises(openai.BadRequestError, match='n must be 1'): ask(client, n=2)
    with pytest.raises(openai.NotFoundError, match='no model named'): ask(client, 'nope')
    assert ask(client).choices[0].message.content

def test_api_key(engine):
    from medsft.serve import build_app, serve_in_thread, stop_server
    server = serve_in_thread(build_app(engine, api_key='s3cret'))
    try:
        for url in ('/health', '/v1/models'):
            assert get(server.url + url)[0] == 401 and get(server.url + url, {'Authorization': 'Bearer no'})[0] == 401
        status, _, err = post(server.url + '/v1/chat/completions', {'messages': [{'role': 'user', 'content': Q}]})
        assert status == 401 and err['error']['code'] == 'invalid_api_key'
        with pytest.raises(openai.AuthenticationError):
            ask(openai.OpenAI(base_url=server.url + '/v1', api_key='wrong', max_retries=0))
        good = openai.OpenAI(base_url=server.url + '/v1', api_key='s3cret', max_retries=0)
        assert ask(good, max_tokens=4).usage.completion_tokens == 4
        assert get(server.url + '/')[0] == 200  # the page itself holds no data; it asks for the key
    finally: stop_server(server)

def test_binds_localhost_by_default():
    from medsft.cli import flags_of
    from medsft.serve import medsft_serve
    assert next(f.default for f in flags_of(medsft_serve.spec) if f.name == 'host') == '127.0.0.1'

def test_folders_carry_what_vllm_reads(trained):
    "vLLM/SGLang read config.json, generation_config.json (eos ids: `<|im_end|>` among them), the chat template."
    for kind in ('full', 'merged'):
        folder = trained[kind]
        assert json.loads((folder/'config.json').read_text())['model_type'] == 'qwen3'
        eos = json.loads((folder/'generation_config.json').read_text())['eos_token_id']
        assert 151645 in (eos if isinstance(eos, list) else [eos]), (kind, eos)
        template = (folder/'chat_template.jinja').read_text() if (folder/'chat_template.jinja').exists() else \
            json.loads((folder/'tokenizer_config.json').read_text()).get('chat_template', '')
        assert '<think>' in template and 'enable_thinking' in template, kind
        assert list(folder.glob('*.safetensors')) and (folder/'tokenizer.json').exists(), kind
    adapter = trained['lora']
    assert (adapter/'adapter_model.safetensors').exists()
    assert json.loads((adapter/'adapter_config.json').read_text())['base_model_name_or_path']

def chromium_driver():
    "Headless Chromium through chromedriver; skipped when absent outside CI, a failure under CI=true."
    if not (shutil.which('chromium') and shutil.which('chromedriver')):
        msg = 'chromium and chromedriver are not installed (apt-get install chromium chromium-driver)'
        if os.environ.get('CI') == 'true': pytest.fail(msg)
        pytest.skip(msg)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which('chromium')
    for flag in ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                 '--disable-background-networking', '--disable-component-update', '--disable-sync',
                 '--disable-dev-shm-usage'):
        opts.add_argument(flag)
    return opts

def test_chat_page_in_browser(server, engine, tmp_path):
    "Type a question, see text stream in, see the think block folded above the answer, ask a follow-up."
    opts = chromium_driver()
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select
    from selenium.webdriver.support.ui import WebDriverWait
    opts.add_argument(f'--user-data-dir={tmp_path/"profile"}')
    driver = webdriver.Chrome(options=opts, service=Service(shutil.which('chromedriver')))
    try:
        driver.get(server.url + '/')
        wait = WebDriverWait(driver, 60)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '#model option')) == 3)
        assert '不能替代医生' in driver.find_element(By.ID, 'disclaimer').text
        Select(driver.find_element(By.ID, 'model')).select_by_value('think')
        driver.find_element(By.ID, 'max-tokens').send_keys('64')
        driver.execute_script("""window.updates = 0;
            new MutationObserver(() => window.updates++).observe(document.getElementById('log'),
                {subtree: true, childList: true, characterData: true});""")
        for n, question in enumerate([Q, '那运动呢？'], 1):
            driver.find_element(By.ID, 'question').send_keys(question)
            driver.find_element(By.ID, 'send').click()
            wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, '.assistant[data-state=done]')) == n)
        turns = driver.find_elements(By.CSS_SELECTOR, '.assistant')
        assert [t.get_attribute('data-finish') for t in turns] == ['stop', 'stop']
        for t in turns:
            think, answer = t.find_element(By.CSS_SELECTOR, 'details.think'), t.find_element(By.CSS_SELECTOR, '.answer')
            assert think.is_displayed() and not think.get_property('open')  # shown, folded
            assert think.location['y'] < answer.location['y'] and answer.text.strip()
            assert driver.execute_script('return arguments[0].querySelector("div").textContent', think).strip()
        assert driver.execute_script('return window.updates') > 2 * 10  # many small updates: it streamed
        first, second = [r for r in list(engine.records) if r['model'] == 'think'][-2:]
        assert second['prompt_tokens'] > first['prompt_tokens'] + 10  # the follow-up carried the history
    finally: driver.quit()

"""Every string the app shows, in English and 简体中文, in one table.

The page's Gradio components take theirs through ``gr.I18n`` (built in :mod:`workbench.app.ui`), the in-page
renderer gets the whole table as JSON, and the server formats its messages (errors, notes) with :func:`say` in the
language of the request. Placeholders are ``{name}``, filled the same way in Python and in the page's JS.
A test reads the page in Chinese and fails on any English left over, so a new string needs both entries.
"""

from __future__ import annotations

from typing import Any, Mapping

LANGUAGES = ("en", "zh-CN")
COOKIE = "wb_lang"  # set by the page (static/head.js) to the language it shows, read by the server for messages

STRINGS: dict[str, tuple[str, str]] = {
    # The Gradio components around the renderer.
    "title": ("GPT Workbench", "GPT 工作台"),
    "prompt": ("Prompt", "提示词"),
    "examples": ("Example prompts", "示例提示词"),
    "settings": ("Sampling settings", "采样设置"),
    "max_new_tokens": ("Max new tokens", "最多生成词元数"),
    "temperature": ("Temperature (0 = greedy)", "温度(0 = 贪心)"),
    "top_k": ("Top-k (0 = off)", "Top-k(0 = 关闭)"),
    "top_p": ("Top-p (1 = off)", "Top-p(1 = 关闭)"),
    "seed": ("Seed (empty = random)", "随机种子(留空 = 随机)"),
    "generate": ("Generate", "生成"),
    "stop": ("Stop", "停止"),
    "text_api": ("Generated text", "生成的文本"),
    "ablation": ("Head ablation: switch heads off and regenerate", "注意力头消融:关闭一些头后重新生成"),
    "ablate_heads": ("Heads to switch off", "要关闭的注意力头"),
    "ablate_run": ("Regenerate with these heads off (same seed)", "关闭这些头后重新生成(相同种子)"),
    "baseline_text": ("With every head", "所有头都在"),
    "ablated_text": ("Heads off", "关闭后"),
    # The renderer: status line.
    "state_idle": ("Ready: type a prompt and press Generate", "就绪:输入提示词并点击“生成”"),
    "state_waiting": ("waiting for a free generator…", "排队等待空闲的生成器…"),
    "state_generating": ("generating…", "生成中…"),
    "state_done": ("done", "完成"),
    "state_stopped": ("stopped", "已停止"),
    "state_error": ("error", "出错"),
    "status_counts": ("{prompt} prompt tokens · {new} new tokens · {speed} tokens/s · seed {seed}",
                      "提示词 {prompt} 个词元 · 新生成 {new} 个词元 · 每秒 {speed} 个词元 · 种子 {seed}"),
    # The renderer: controls.
    "step": ("Step", "步骤"),
    "step_of": ("of {n}", "共 {n} 步"),
    "prev": ("Previous step (←)", "上一步(←)"),
    "next": ("Next step (→)", "下一步(→)"),
    "replay": ("Replay", "回放"),
    "pause": ("Pause", "暂停"),
    "pace": ("{n} tokens/s", "每秒 {n} 个词元"),
    "layer": ("Layer", "层"),
    "head": ("Head", "头"),
    "mean": ("mean of heads", "各头平均"),
    "language": ("中文", "English"),  # the switch names the other language
    "presenter": ("Presenter mode", "演示模式"),
    # The renderer: panels and axes.
    "text": ("Generated text", "生成的文本"),
    "tokens": ("Tokens: the darker, the likelier the model found it; click one to inspect that step",
               "词元:颜色越深,模型认为它越可能;点击一个词元查看那一步"),
    "attention": ("Attention · L{layer} {head} · step {step}: {query} → {token}",
                  "注意力 · L{layer} {head} · 第 {step} 步:{query} → {token}"),
    "attention_empty": ("Attention", "注意力"),
    "query": ("query (reads)", "查询(读取者)"),
    "key": ("key (read)", "键(被读取)"),
    "scale": ("colour ∝ √weight: 0.05 is already visible", "颜色 ∝ √权重:0.05 也清晰可见"),
    "heads": ("All heads of L{layer}, the last {n} positions", "L{layer} 的所有头,最近 {n} 个位置"),
    "candidates": ("Top candidates at step {step} (red: picked)", "第 {step} 步的候选词元(红色:被选中)"),
    "candidates_empty": ("Top candidates", "候选词元"),
    "pipeline": ("Sampling pipeline at step {step}", "第 {step} 步的采样流程"),
    "pipeline_empty": ("Sampling pipeline", "采样流程"),
    "kept": ("{n} tokens left", "剩 {n} 个词元"),
    "stage_raw": ("raw", "原始分布"),
    "stage_penalties": ("penalties", "惩罚后"),
    "stage_temperature": ("temperature", "温度后"),
    "stage_top-k": ("top-k", "top-k 后"),
    "stage_top-p": ("top-p", "top-p 后"),
    "lens": ("Logit lens up to step {step}: each layer's best guess for the next token",
             "Logit 透镜(到第 {step} 步):每一层对下一个词元的最佳猜测"),
    "lens_empty": ("Logit lens", "Logit 透镜"),
    "lens_attn": ("L{layer} after attention", "L{layer} 注意力后"),
    "lens_mlp": ("L{layer} after MLP", "L{layer} MLP 后"),
    "lens_position": ("position {pos}", "位置 {pos}"),
    "prompt_token": ("Position {pos} is part of the prompt: the model read it but did not choose it, so it has no "
                     "candidates. Its attention is row {pos} of the heatmap of any later step.",
                     "位置 {pos} 属于提示词:模型读取了它,但不是模型选出来的,所以没有候选词元。它的注意力是之后任一步热力图中的第 {pos} 行。"),
    "model": ("Model", "模型"),
    "model_name": ("name", "名称"),
    "model_params": ("parameters", "参数量"),
    "model_shape": ("layers × heads", "层数 × 头数"),
    "model_width": ("width", "宽度"),
    "model_context": ("context", "上下文"),
    "model_vocab": ("vocabulary", "词表"),
    "model_device": ("device", "设备"),
    "ablation_chart": ("p(each original token) with every head and with {heads} off",
                       "每个原词元的概率:所有头都在 vs 关闭 {heads}"),
    "ablation_base": ("every head", "所有头"),
    "ablation_off": ("heads off", "关闭后"),
    # Notes, shown once per run in the renderer's note line.
    "note_empty_prompt": ("Empty prompt: started from the start token {token}.", "提示词为空:从起始词元 {token} 开始。"),
    "note_long_prompt": ("The prompt has {n} tokens, more than the context of {block}: kept the last {block}.",
                         "提示词有 {n} 个词元,超过上下文长度 {block}:保留了最后 {block} 个。"),
    "note_slid": ("The context filled up ({block} tokens): the window slid to keep the last {keep}.",
                  "上下文已满({block} 个词元):窗口滑动,保留最后 {keep} 个。"),
    # Errors (Gradio shows them in a pop-up, titled with "error").
    "error": ("Error", "错误"),
    # The titles of Gradio's pop-ups, by type (the page puts them in its language).
    "toast_error": ("Error", "错误"),
    "toast_warning": ("Warning", "警告"),
    "toast_info": ("Info", "提示"),
    "toast_success": ("Success", "成功"),
    "err_field": ("{field} must be {allowed}, got {value}", "{field} 必须是 {allowed},收到的是 {value}"),
    "allowed_max_new_tokens": ("an integer in [1, {cap}]", "[1, {cap}] 之间的整数"),
    "allowed_temperature": ("a finite number >= 0 (0 means greedy)", "大于等于 0 的有限数(0 表示贪心)"),
    "allowed_top_k": ("an integer >= 0 (0 means no top-k filter)", "大于等于 0 的整数(0 表示不做 top-k 过滤)"),
    "allowed_top_p": ("a number in (0, 1] (1 means no top-p filter)", "(0, 1] 之间的数(1 表示不做 top-p 过滤)"),
    "allowed_seed": ("empty (random) or an integer in [0, 2**63)", "留空(随机)或 [0, 2**63) 之间的整数"),
    "allowed_prompt": ("text", "文本"),
    "err_chars": ("The prompt has characters this model's tokenizer cannot encode: {chars}",
                  "提示词中有本模型的分词器无法编码的字符:{chars}"),
    "err_surrogate": ("The prompt has an unpaired surrogate (U+{code} at position {pos}), which is not a character; "
                      "remove it or send valid UTF-16 text",
                      "提示词中有一个不成对的代理码元(位置 {pos} 的 U+{code}),它不是字符;请删除它或发送合法的 UTF-16 文本"),
    "err_inputs": ("/{api} takes {want} inputs ({names}), got {n}", "/{api} 需要 {want} 个输入({names}),收到 {n} 个"),
    "err_no_run": ("Generate some text first: ablation compares against that generation.",
                   "请先生成一段文本:消融要和那次生成做比较。"),
    "err_no_heads": ("Pick at least one head to switch off.", "请至少选择一个要关闭的头。"),
    "err_unexpected": ("The generation failed on the server ({kind}); the text so far is kept. Please try again.",
                       "服务器上的生成出错了({kind});已生成的文本保留。请重试。"),
}

FIELD_NAMES = {  # how the error message names each field: the API's name, which both languages keep
    "max_new_tokens": "max_new_tokens", "temperature": "temperature", "top_k": "top_k", "top_p": "top_p",
    "seed": "seed", "prompt": "prompt",
}


def language(cookies: Mapping[str, str] | None, accept_language: str | None) -> str:
    """The language of a request: the page's cookie, else the browser's Accept-Language, else English."""
    chosen = (cookies or {}).get(COOKIE) or (accept_language or "").split(",")[0].strip()
    return "zh-CN" if chosen.lower().startswith("zh") else "en"


def say(key: str, lang: str = "en", **params: Any) -> str:
    """The string ``key`` in ``lang`` with its ``{name}`` placeholders filled."""
    en, zh = STRINGS[key]
    return (zh if lang == "zh-CN" else en).format(**params)


def table(lang: str) -> dict[str, str]:
    """Every string in one language: the page's renderer and ``gr.I18n`` take this."""
    return {key: pair[LANGUAGES.index(lang)] for key, pair in STRINGS.items()}

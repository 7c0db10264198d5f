"""Offline ERNIE-4.5 style tokenizer for the tiny reference checkpoints.

The Hub repos (``baidu/ERNIE-4.5-21B-A3B-PT``, ``baidu/ERNIE-4.5-VL-28B-A3B-PT``/``-Thinking``) ship a
SentencePiece BPE ``tokenizer.model`` with byte fallback plus ERNIE's special tokens. The Hub is not
reachable here, so we train a small SentencePiece BPE model on a built-in English + Chinese + digits
corpus and wrap it the way transformers' own converter does
(``transformers/models/ernie4_5_vl_moe/convert_ernie4_5_vl_moe_to_hf.py``): a ``LlamaTokenizer``
loaded from the ``.model`` file with ``cls_token=<|begin_of_sentence|>``, ``sep_token=<|end_of_sentence|>``,
``pad_token=<unk>``, ``mask_token=<mask:1>``, ``add_bos_token=False``, digits as plain (non-special)
pieces, and the multimodal tokens named through ``image_token``/``video_token``/... attributes.

Token layout (mirrors the real vocabulary's order, scaled down):
- SentencePiece pieces: ``<unk>``=0, ``<s>``=1, ``</s>``=2, then the control pieces in
  ``CONTROL_TOKENS`` (``<pad>``, ``<cls>``, ``<sep>``, ``<mask:0..7>``, ``<|begin_of_sentence|>``,
  ``<|end_of_sentence|>``), the digits ``0``..``9`` (user-defined pieces, as in the real model), 256 byte
  pieces and the learned merges.
- Added tokens after the SentencePiece vocabulary, in the real model's relative order
  (``<|IMAGE_PLACEHOLDER|>`` is 100295 there and comes first; ``<|VIDEO_PLACEHOLDER|>``, 103367 there,
  comes after the start/end markers 101304..101307). The 1001 ``<|LOC_i|>`` grounding tokens and the
  ``<|IMAGE_UNUSE:i|>`` fillers of the real vocabulary are left out to keep the tiny vocabulary small.
"""

from __future__ import annotations

import io
import shutil
import tempfile
from pathlib import Path

import sentencepiece as spm
from transformers import LlamaTokenizer

CONTROL_TOKENS = (
    "<pad>",
    "<cls>",
    "<sep>",
    *(f"<mask:{i}>" for i in range(8)),
    "<|begin_of_sentence|>",
    "<|end_of_sentence|>",
)
DIGITS = tuple(str(i) for i in range(10))

# Model-specific names the ERNIE-4.5-VL processor reads from the tokenizer (`tokenizer.image_token`...).
MM_TOKEN_NAMES = {
    "image_token": "<|IMAGE_PLACEHOLDER|>",
    "image_start_token": "<|IMAGE_START|>",
    "image_end_token": "<|IMAGE_END|>",
    "video_token": "<|VIDEO_PLACEHOLDER|>",
    "video_start_token": "<|VIDEO_START|>",
    "video_end_token": "<|VIDEO_END|>",
}
ADDED_TOKENS = (
    "<|IMAGE_PLACEHOLDER|>",
    "<|AUDIO_PLACEHOLDER|>",
    "<|LOC_BEGIN|>",
    "<|LOC_END|>",
    "<|LOC_SEP|>",
    "<|CROP_COL_SEP|>",
    "<|CROP_ROW_SEP|>",
    "<|IMAGE_SEP|>",
    "<|IMAGE_START|>",
    "<|IMAGE_END|>",
    "<|VIDEO_START|>",
    "<|VIDEO_END|>",
    "<|ASR_START|>",
    "<|ASR_END|>",
    "<|VIDEO_PLACEHOLDER|>",
    "<think>",
    "</think>",
)

SPM_VOCAB_SIZE = 1024

CORPUS = (
    "User: Describe this picture in detail.",
    "Assistant: The picture shows a small red square on a white background.",
    "User: What color is the circle in the image?",
    "Assistant: The circle is blue, and it sits in the upper left corner.",
    "User: How many objects can you see?",
    "Assistant: I can see 3 objects: a cat, a dog and a tree.",
    "The quick brown fox jumps over the lazy dog.",
    "A picture is worth a thousand words, but a model needs tokens.",
    "Mixture-of-experts models route every token to a few experts.",
    "Vision experts and text experts share the attention layers.",
    "The image encoder splits each picture into patches of 14 by 14 pixels.",
    "Quantization maps weights to a small set of integer levels.",
    "Low-bit models are smaller and faster, but they can lose accuracy.",
    "Please answer the question step by step, then give the final answer.",
    "Let me think about this carefully before I answer.",
    "The video shows a person walking along the beach at sunset.",
    "There is a green triangle, a yellow star and an orange rectangle.",
    "Read the text in the image and translate it into English.",
    "The chart compares sales in 2023 and 2024 for each quarter.",
    "In 1969, humans landed on the Moon for the first time.",
    "The train leaves at 08:45 and arrives at 12:30.",
    "Call 555-0199 or write to the office at 42 Main Street.",
    "The total is 1,234.56 dollars, including 8.5% tax.",
    "Pi is approximately 3.14159, and e is about 2.71828.",
    "She bought 12 apples, 7 oranges and 20 bananas.",
    "Photos, drawings, diagrams and screenshots are all images.",
    "Is the dog on the left or on the right side of the photo?",
    "The weather today is sunny with a light breeze from the west.",
    "Good morning! How can I help you today?",
    "Thank you for the detailed explanation.",
    "用户：请描述这张图片。",
    "助手：图片中有一只小猫坐在窗台上。",
    "这是一张红色正方形的图片，背景是白色的。",
    "图片左上角有一个蓝色的圆形。",
    "今天天气很好，我们去公园散步吧。",
    "请一步一步地思考，然后给出最终答案。",
    "视频中有一个人在海边跑步。",
    "模型把每个词元分配给少数几个专家。",
    "量化可以让模型变得更小、更快。",
    "我有3个苹果和5个橘子，一共有8个水果。",
    "北京是中国的首都，上海是最大的城市。",
    "文心大模型支持中文和英文。",
    "你好，世界！欢迎使用多模态模型。",
    "这张图表显示了2024年每个季度的销售额。",
    "0 1 2 3 4 5 6 7 8 9 10 100 1000 2025 3.5 -7 42%",
)


def train_sentencepiece(path: Path) -> Path:
    """Train the tiny SentencePiece BPE model (deterministic: one thread, fixed corpus) and write it."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 8),
        model_writer=model,
        model_type="bpe",
        vocab_size=SPM_VOCAB_SIZE,
        hard_vocab_limit=False,  # the corpus is small: take as many merges as it yields
        byte_fallback=True,
        character_coverage=1.0,
        control_symbols=list(CONTROL_TOKENS),
        user_defined_symbols=list(DIGITS),
        add_dummy_prefix=False,
        num_threads=1,
        minloglevel=2,
    )
    path.write_bytes(model.getvalue())
    return path


def build_ernie_tokenizer(out_dir: str | Path, chat_template: str, *, multimodal: bool) -> LlamaTokenizer:
    """Train the SentencePiece model in ``out_dir``, wrap it as ERNIE does and return the tokenizer.

    ``out_dir/tokenizer.model`` stays on disk (the Hub repos ship it); the caller saves the
    transformers files. With ``multimodal`` the tokenizer names its image/video tokens
    (``tokenizer.image_token_id``...), which ``Ernie4_5_VLMoeProcessor`` requires.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    spm_file = train_sentencepiece(out_dir / "tokenizer.model")
    # Work in a directory of our own, so stale files in out_dir cannot leak in. The added tokens get
    # ids in list order only while nothing names them, so the names are attached on a reload.
    with tempfile.TemporaryDirectory() as work:
        shutil.copyfile(spm_file, Path(work, "tokenizer.model"))
        LlamaTokenizer.from_pretrained(
            work,
            cls_token="<|begin_of_sentence|>",
            sep_token="<|end_of_sentence|>",
            pad_token="<unk>",
            mask_token="<mask:1>",
            add_bos_token=False,
            add_prefix_space=False,
            # Replacing the list keeps the digits out of the special tokens (decode would drop them).
            extra_special_tokens=[*CONTROL_TOKENS, *ADDED_TOKENS],
            chat_template=chat_template,
            model_max_length=131072,
        ).save_pretrained(work)
        return LlamaTokenizer.from_pretrained(work, **(MM_TOKEN_NAMES if multimodal else {}))


def padded_vocab_size(tokenizer, multiple: int = 64) -> int:
    """Embedding rows covering every token id, rounded up as the real checkpoints do (103424 = 1616 * 64)."""
    return -(-len(tokenizer) // multiple) * multiple


# ERNIE-4.5 text chat format, as in ms-swift's ERNIE template (swift/llm/template/template/baidu.py):
# "<|begin_of_sentence|>{system}\nUser: {query}\nAssistant: {response}<|end_of_sentence|>".
TEXT_CHAT_TEMPLATE = (
    "{{- '<|begin_of_sentence|>' -}}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'system' -%}{{- message.content + '\\n' -}}"
    "{%- elif message.role == 'user' -%}{{- 'User: ' + message.content + '\\n' -}}"
    "{%- elif message.role == 'assistant' -%}{{- 'Assistant: ' + message.content + '<|end_of_sentence|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- 'Assistant: ' -}}{%- endif -%}"
)

# ERNIE-4.5-VL chat format, simplified from DEFAULT_CHAT_TEMPLATE in transformers'
# convert_ernie4_5_vl_moe_to_hf.py (the template of the converted -PT repo): "Picture N:" / "Video N:"
# placeholders, "\nAssistant: " turns, reasoning wrapped in <think>...</think>. The generation prompt
# closes an empty <think> block unless thinking is on; the -PT template defaults to thinking off, the
# -Thinking model to thinking on (the older template in convert_ernie4_5_vl_to_hf.py).
_VL_CHAT_TEMPLATE = (
    "{%- set image_count = namespace(value=0) -%}"
    "{%- set video_count = namespace(value=0) -%}"
    "{%- set thinking = enable_thinking if enable_thinking is defined else __THINKING_DEFAULT__ -%}"
    "{{- '<|begin_of_sentence|>' -}}"
    "{%- for message in messages -%}"
    "{%- if message.role in ['system', 'user'] -%}"
    "{%- if message.role == 'user' -%}{{- 'User: ' -}}{%- endif -%}"
    "{%- if message.content is string -%}{{- message.content -}}"
    "{%- else -%}{%- for item in message.content -%}"
    "{%- if item.type == 'text' -%}{{- item.text -}}"
    "{%- elif item.type in ['image', 'image_url'] -%}"
    "{%- set image_count.value = image_count.value + 1 -%}"
    "{{- 'Picture ' ~ image_count.value ~ ':<|IMAGE_START|><|IMAGE_PLACEHOLDER|><|IMAGE_END|>' -}}"
    "{%- elif item.type in ['video', 'video_url'] -%}"
    "{%- set video_count.value = video_count.value + 1 -%}"
    "{{- 'Video ' ~ video_count.value ~ ':<|VIDEO_START|><|VIDEO_PLACEHOLDER|><|VIDEO_END|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- if message.role == 'system' -%}{{- '\\n' -}}{%- endif -%}"
    "{%- elif message.role == 'assistant' -%}"
    "{%- if message.content is string -%}{%- set content = message.content -%}"
    "{%- else -%}{%- set content = message.content | selectattr('type', 'equalto', 'text')"
    " | map(attribute='text') | join('') -%}{%- endif -%}"
    "{%- set reasoning = message.reasoning_content if message.reasoning_content is defined else '' -%}"
    "{%- if '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].split('<think>')[-1].strip('\\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\\n') -%}"
    "{%- endif -%}"
    "{%- if reasoning -%}"
    "{{- '\\nAssistant: <think>\\n' + reasoning + '\\n</think>\\n\\n' + content -}}"
    "{%- else -%}{{- '\\nAssistant: ' + content -}}{%- endif -%}"
    "{{- '<|end_of_sentence|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '\\nAssistant: ' -}}"
    "{%- if thinking -%}{{- '<think>' -}}{%- else -%}{{- '<think>\\n\\n</think>\\n\\n' -}}{%- endif -%}"
    "{%- endif -%}"
)


def vl_chat_template(*, thinking_by_default: bool) -> str:
    """The ERNIE-4.5-VL chat template; ``enable_thinking`` overrides the default at render time."""
    return _VL_CHAT_TEMPLATE.replace("__THINKING_DEFAULT__", "true" if thinking_by_default else "false")

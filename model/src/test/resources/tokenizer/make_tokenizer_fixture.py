#!/usr/bin/env python3
"""Reference fixtures for Orbit's tokenizer, made with Hugging Face `tokenizers`.

Trains small byte-level BPE tokenizers whose pre-tokenizer, normalizer, decoder and
post-processor blocks are copied verbatim from released tokenizer.json files (Qwen3,
DeepSeek-V3, gpt-oss/o200k), saves them, and records how `tokenizers` encodes and decodes
a few hundred varied strings. Also records the pieces that a set of real pre-tokenizer
blocks produce on the same strings (regex dialect coverage), with no model involved.

    python3 make_tokenizer_fixture.py OUT_DIR

Writes OUT_DIR/tokenizer-fixtures.tar.gz holding, per variant V in
{qwen3, deepseek_v3, o200k, byte_fallback}: V/tokenizer.json and V/cases.json, plus
pretokenizers.json; and OUT_DIR/summary.txt. Needs only `tokenizers` (no network).

cases.json: {"tokenizers_version", "variant", "cases": [{
    "text",
    "ids"            encode(text, add_special_tokens=False),
    "ids_special"    encode(text, add_special_tokens=True)   (post-processor applied),
    "ids_as_text"    encode with encode_special_tokens=True  (special tokens read as text),
    "decoded"        decode(ids, skip_special_tokens=False),
    "decoded_skip"   decode(ids, skip_special_tokens=True),
    "stream"         DecodeStream(skip_special_tokens=False).step(id) for each id (null = held)
}]}
"""
import json
import os
import random
import sys
import tarfile
import traceback

import tokenizers
from tokenizers import AddedToken, Tokenizer, decoders, pre_tokenizers, trainers

# ---------------------------------------------------------------------------------------
# Blocks copied from released tokenizer.json files.
# ---------------------------------------------------------------------------------------

QWEN3_NORMALIZER = {"type": "NFC"}
QWEN3_PRE_TOKENIZER = json.loads(r'''{"type": "Sequence", "pretokenizers": [
  {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
  {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": false}]}''')
QWEN3_POST_PROCESSOR = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}
QWEN3_DECODER = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False}

DEEPSEEK_NORMALIZER = {"type": "Sequence", "normalizers": []}
DEEPSEEK_PRE_TOKENIZER = json.loads(r'''{"type": "Sequence", "pretokenizers": [
  {"type": "Split", "pattern": {"Regex": "\\p{N}{1,3}"}, "behavior": "Isolated", "invert": false},
  {"type": "Split", "pattern": {"Regex": "[\u4e00-\u9fa5\u3040-\u309f\u30a0-\u30ff]+"}, "behavior": "Isolated", "invert": false},
  {"type": "Split", "pattern": {"Regex": "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
  {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}''')
DEEPSEEK_DECODER = {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True}
DEEPSEEK_BOS = "<\uff5cbegin\u2581of\u2581sentence\uff5c>"
DEEPSEEK_EOS = "<\uff5cend\u2581of\u2581sentence\uff5c>"
DEEPSEEK_PAD = "<\uff5c\u2581pad\u2581\uff5c>"

O200K_PRE_TOKENIZER = json.loads(r'''{"type": "Sequence", "pretokenizers": [
  {"type": "Split", "pattern": {"Regex": "[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n/]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false},
  {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}''')

# Pre-tokenizer blocks of other released tokenizers, recorded without a model: they cover the
# regex dialect (possessive quantifiers, class intersection, scripts, nested classes) and the
# split behaviours (Removed with invert, MergedWithNext, Contiguous digits).
EXTRA_PRE_TOKENIZERS = {
    "kimi_k3": json.loads(r'''{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "[\\p{Han}]+|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]*[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\\r\\n\\p{L}\\p{N}]?[\\p{Lu}\\p{Lt}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]+[\\p{Ll}\\p{Lm}\\p{Lo}\\p{M}&&[^\\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}'''),
    "llada_possessive": json.loads(r'''{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*|\\s*[\\r\\n]|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}'''),
    "cl100k_removed_invert": json.loads(r'''{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Removed", "invert": true}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}'''),
    "laguna_merged_with_next": json.loads(r'''{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": "(?:\\r?\\n)+(?!\\r?\\n)"}, "behavior": "MergedWithNext", "invert": false}, {"type": "Split", "pattern": {"Regex": "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}'''),
    "bloom_nested_class": json.loads(r'''{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"Regex": " ?[^(\\s|[.,!?…。，、।۔،])]+"}, "behavior": "Isolated", "invert": false}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}]}'''),
    "smollm_digits_gpt2": json.loads(r'''{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]}'''),
    "gpt2_prefix_space": json.loads(r'''{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}'''),
    "prefix_space_per_piece": json.loads(r'''{"type": "Sequence", "pretokenizers": [{"type": "Split", "pattern": {"String": "\n"}, "behavior": "MergedWithPrevious", "invert": false}, {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": false}]}'''),
    "digits_contiguous": json.loads(r'''{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": false}, {"type": "Split", "pattern": {"String": " "}, "behavior": "Contiguous", "invert": false}]}'''),
}

# ---------------------------------------------------------------------------------------
# Training corpus and test strings.
# ---------------------------------------------------------------------------------------

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "I don't think we'll make it; they're late and it's raining.",
    "She said: \"You've got to be kidding me!\" and I'd agree.",
    "Reinforcement learning fine-tunes language models with rewards.",
    "A mixture of experts routes each token to a few experts.",
    "def add(a, b):\n    return a + b\n",
    "for (int i = 0; i < n; i++) {\n\tsum += values[i];\n}\n",
    "if __name__ == \"__main__\":\n    main()\n",
    "import numpy as np\nx = np.arange(10) * 2\nprint(x.sum())\n",
    "SELECT name, count(*) FROM users WHERE age >= 18 GROUP BY name;",
    "{\"id\": 42, \"tags\": [\"a\", \"b\"], \"ok\": true}",
    "123+456=579", "1000-1=999", "12*12=144", "81/9=9", "2^10=1024", "3.14159 2.71828",
    "The answer is 42. The total was 1,234,567 dollars in 2024.",
    "Question: what is 17 + 25?\nAnswer: 42\n",
    "Die Größe der Straße überrascht die Bürger. Äpfel und Öl sind teuer.",
    "Über den Wolken muss die Freiheit wohl grenzenlos sein.",
    "我们今天学习中文。北京是中国的首都。你好，世界！",
    "机器学习和深度学习正在改变世界。",
    "こんにちは、世界。日本語のテキストです。カタカナとひらがな。",
    "東京は日本の首都です。",
    "مرحبا بالعالم. اللغة العربية جميلة.",
    "Привет, мир! Как дела?",
    "Καλημέρα κόσμε.",
    "नमस्ते दुनिया, यह हिंदी है।",
    "안녕하세요 세계",
    "Emoji: 😀 😂 👍 🎉 ❤️ 🚀 and 👨‍👩‍👧 family.",
    "Tabs\tand\tspaces    mixed   here.",
    "Windows line endings\r\nare here\r\n",
    "Blank lines\n\n\nbetween paragraphs.\n\n",
    "   leading spaces and trailing spaces   ",
    "Café, naïve, résumé, coöperate, jalapeño.",
]

SPECIAL_QWEN = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


SYLLABLES = {
    "latin": ["ka", "to", "ri", "men", "ber", "stra", "ung", "lich", "the", "ing", "ion", "er", "an", "sch",
              "ver", "ge", "pro", "con", "tion", "ment", "ly", "al", "ous", "ive", "ä", "ö", "ü", "ß", "é"],
    "cyrillic": ["при", "вет", "мир", "ко", "ни", "ство", "ова", "ть", "ся", "ра", "ли"],
    "greek": ["κα", "λη", "μέ", "ρα", "κό", "σμε", "τη", "ος"],
    "arabic": ["مر", "حب", "ال", "عا", "لم", "لغ", "ة", "ي"],
}
CJK = [chr(c) for c in range(0x4E00, 0x4E00 + 400)] + [chr(c) for c in range(0x3041, 0x3097)] \
    + [chr(c) for c in range(0x30A1, 0x30F7)]


def synthetic_line(rng):
    kind = rng.random()
    if kind < 0.55:
        script = rng.choice(list(SYLLABLES))
        words = ["".join(rng.choice(SYLLABLES[script]) for _ in range(rng.randint(1, 4)))
                 for _ in range(rng.randint(3, 12))]
        if rng.random() < 0.3:
            words[0] = words[0].capitalize()
        return " ".join(words) + rng.choice([".", "!", "?", ",", "", "\n", ";"])
    if kind < 0.75:
        return "".join(rng.choice(CJK) for _ in range(rng.randint(4, 30))) + rng.choice(["。", "，", "！", ""])
    if kind < 0.9:
        a, b = rng.randint(0, 10 ** rng.randint(1, 6)), rng.randint(0, 10 ** rng.randint(1, 6))
        op = rng.choice("+-*")
        value = a + b if op == "+" else a - b if op == "-" else a * b
        return f"{a}{op}{b}={value}"
    name = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz_") for _ in range(rng.randint(2, 10)))
    return rng.choice([f"def {name}(x):\n    return x + {rng.randint(0, 99)}\n",
                       f"let {name} = [{rng.randint(0, 9)}, {rng.randint(0, 99)}];",
                       f"\t{name}.append({name}[i])\r\n",
                       f"if ({name} != null) {{ {name}++; }}"])


def corpus(seed):
    rng = random.Random(seed)
    lines = []
    for _ in range(3000):
        k = rng.randint(1, 3)
        lines.append(" ".join(rng.choice(SENTENCES) for _ in range(k)))
    for _ in range(12000):
        lines.append(synthetic_line(rng))
    return lines


HAND_CASES = [
    "", " ", "  ", "   ", "\n", "\n\n", "\n\n\n", "\r\n", "\r\n\r\n", "\r", "\t", "\t\t", " \t\n", " \n ",
    "a", "A", "Hello world", " Hello", "Hello ", "  leading two", "trailing two  ", "multiple     spaces",
    "tab\tseparated\tvalues", "line1\nline2", "line1\r\nline2\r\n", "para1\n\n\npara2", "   \n   \n", "x \n y",
    "a  \n\n  b", "end with newline\n", "\n starts with newline", "mixed \t \n \r\n whitespace",
    " \u00a0 nbsp \u00a0", "\u3000ideographic\u3000space", "em\u2003space", "nel\u0085char", "line\u2028sep",
    "0", "7", "42", "123", "1234", "12345", "12345678901234567890", "3.14159", "-273.15", "1,000,000",
    "1e10", "0x1F", "123+456=579", "99*99=9801", "2^10 = 1024", "(12-5)/7=1", "٣٤٥ Arabic-Indic digits",
    "①②③", "Ⅻ roman", "½ ¾", "x²+y²=z²", "v1.2.3", "2024-01-31T12:00:00Z", "$1,234.56", "50%",
    "don't", "I'll", "we're", "they've", "I'm", "he'd", "it's", "DON'T", "I'LL", "It'S", "it'\u017f",
    "rock'n'roll", "'s", "''", "l'été", "don't stop", "O'Reilly's book", "`backticks`",
    "def f(x):\n    return x * 2\n", "for (int i = 0; i < n; i++) {\n\tsum += a[i];\n}",
    "if x==1:print('hi')", "#include <stdio.h>", "SELECT * FROM t WHERE id = 42;", "a->b", "x => x + 1",
    "$HOME/.config/app", "https://example.com/path?q=1&r=2#frag", "email@example.com", "snake_case_name",
    "camelCaseName", "__init__", "\"quoted\"", "{\"key\": [1, 2, 3]}", "<div class=\"x\">text</div>",
    "    indented four", "\tindented tab", "a/b/c", "a\\b\\c", "C:\\Users\\x", "/*comment*/", "// comment",
    "Größe", "Straße", "Über", "Ärger über Öl", "Die Bäume blühen im Frühling.",
    "你好，世界！", "中文分词测试", "我爱北京天安门。", "中文English混合123", "数字123和汉字",
    "こんにちは世界", "カタカナとひらがな", "日本語のテキスト。", "안녕하세요", "ㄱㄴㄷ",
    "مرحبا بالعالم", "السلام عليكم", "שלום עולם", "Привет, мир!", "Καλημέρα", "नमस्ते दुनिया", "สวัสดีครับ",
    "😀", "👍🏽", "👨\u200d👩\u200d👧\u200d👦", "🏳\ufe0f\u200d🌈", "❤\ufe0f", "🇩🇪🇯🇵", "a😀b", "😀😀😀",
    "emoji at end 🎉", " 🚀 rocket", "👍👍👍👍👍",
    "e\u0301", "\u00e9", "cafe\u0301", "caf\u00e9", "A\u030a", "\u212b", "\ufb01 ligature", "ｆｕｌｌｗｉｄｔｈ",
    "Z\u0351\u0360\u0359alg\u0334o", "n\u0303", "\u1e9b\u0323", "\u0041\u0301\u0302",
    "<|im_start|>user\nhi<|im_end|>\n", "<|endoftext|>", "a<|endoftext|>b", "<|im_start|><|im_end|>",
    " <|im_end|> ", "<|im_end", "im_end|>", "<|im_start|>assistant\n<think>\n\n</think>\n\n",
    "<think>reasoning</think>answer", "<tool_call>{\"name\": \"f\"}</tool_call>", "<|endoftext|><|endoftext|>",
    "<|<|im_end|>|>", "cafe\u0301 is a token", "caf\u00e9 is a token",
    DEEPSEEK_BOS + "You are helpful<\uff5cUser\uff5c>hi<\uff5cAssistant\uff5c>",
    "<\uff5cUser\uff5c>", "<\uff5cAssistant\uff5c>" + DEEPSEEK_EOS, "<mask>", "  <mask>  ", "x<mask>y",
    "x<rs>   y", "<rs>\n\nnext", "hello world", "ahello", "hello", "hello!", "say hello there", "hellohello",
    "new york city", "new  york",
    "Xylophone zebra quokka", "Supercalifragilisticexpialidocious", "pneumonoultramicroscopic",
    "∀x∈ℝ: x²≥0", "→⇒⟹", "₿ €100 £5 ¥300", "\x00", "\x01\x02", "\x7f", "\ufeffBOM", "\u200bZWSP",
    "\u200d", "\ue000", "𠀀𠀁", "𝐀𝐁𝐂", "𝄞 music", "ǅ title case", "ſ long s", "\u0130stanbul",
    "a" * 200, " " * 50, "ab " * 40, "1234567890" * 5, "\n" * 10, "😀" * 10, "\t \t \t", "!!!???...",
    "...", "—", "–", "«quoted»", "“smart quotes”", "‘single’",
]

POOL = [
    "the", "The", " cat", "don't", "I'll", "Größe", "你好", "世界", "こんにちは", "カタ", "مرحبا", "Привет",
    "😀", "👍🏽", "👨\u200d👩\u200d👧", "é", "e\u0301", "123", "4567", "9", "+", "=", "-", "*", "/", "(", ")",
    ".", ",", "!", "?", ":", ";", "'", "\"", "<", ">", "|", "_", "{", "}", "[", "]", "#", "$", "%", "&",
    " ", "  ", "   ", "\t", "\n", "\n\n", "\r\n", "\u00a0", "\u3000", "<|im_start|>", "<|im_end|>",
    "<|endoftext|>", "<think>", "</think>", "hello", "new york", "<mask>", "<rs>", "<\uff5cUser\uff5c>",
    DEEPSEEK_BOS, "caf", "cafe\u0301", "def", "return", "x", "y", "z", "Straße", "中文", "数学", "٣", "²",
]


def test_strings(seed):
    rng = random.Random(seed)
    out = list(HAND_CASES)
    for _ in range(220):
        n = rng.randint(1, 12)
        out.append("".join(rng.choice(POOL) for _ in range(n)))
    for _ in range(30):
        a, b = rng.randint(0, 10 ** rng.randint(1, 9)), rng.randint(0, 10 ** rng.randint(1, 9))
        out.append(f"{a}+{b}={a + b}")
    seen, uniq = set(), []
    for s in out:
        if s not in seen:
            seen.add(s)
            uniq.append(s)
    return uniq


# ---------------------------------------------------------------------------------------
# Building and recording.
# ---------------------------------------------------------------------------------------

def empty_tokenizer(normalizer, pre_tokenizer, post_processor, decoder, byte_fallback=False, ignore_merges=False):
    doc = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": normalizer, "pre_tokenizer": pre_tokenizer,
        "post_processor": post_processor, "decoder": decoder,
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": byte_fallback,
                  "ignore_merges": ignore_merges, "vocab": {}, "merges": []},
    }
    return Tokenizer.from_str(json.dumps(doc))


def byte_level_trainer(vocab_size, special_tokens=()):
    return trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=2, show_progress=False,
                               special_tokens=list(special_tokens),
                               initial_alphabet=pre_tokenizers.ByteLevel.alphabet())


def build_qwen3(lines):
    tok = empty_tokenizer(QWEN3_NORMALIZER, QWEN3_PRE_TOKENIZER, QWEN3_POST_PROCESSOR, QWEN3_DECODER)
    tok.train_from_iterator(lines, byte_level_trainer(3000))
    # As in Qwen3: the special tokens follow the learned vocabulary; <think> and friends are
    # added, not special, and not normalized.
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_QWEN])
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False),
                    AddedToken("</think>", special=False, normalized=False),
                    AddedToken("<tool_call>", special=False, normalized=False),
                    AddedToken("</tool_call>", special=False, normalized=False),
                    # normalized: matched after NFC, so both spellings of "café" hit it
                    AddedToken("cafe\u0301", special=False, normalized=True)])
    return tok


def build_deepseek(lines):
    post = {"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": DEEPSEEK_BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": DEEPSEEK_BOS, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": DEEPSEEK_BOS, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {DEEPSEEK_BOS: {"id": DEEPSEEK_BOS, "ids": [0], "tokens": [DEEPSEEK_BOS]}}}
    tok = empty_tokenizer(DEEPSEEK_NORMALIZER, DEEPSEEK_PRE_TOKENIZER, post, DEEPSEEK_DECODER)
    # As in DeepSeek-V3: BOS, EOS and PAD are the first ids of the model vocabulary too.
    tok.train_from_iterator(lines, byte_level_trainer(3000, [DEEPSEEK_BOS, DEEPSEEK_EOS, DEEPSEEK_PAD]))
    tok.add_tokens([AddedToken("<\uff5cUser\uff5c>", special=False, normalized=True),
                    AddedToken("<\uff5cAssistant\uff5c>", special=False, normalized=True),
                    AddedToken("<think>", special=False, normalized=True),
                    AddedToken("</think>", special=False, normalized=True),
                    AddedToken("<rs>", special=False, rstrip=True, normalized=False),
                    AddedToken("hello", special=False, single_word=True, normalized=False),
                    AddedToken("new york", special=False, normalized=False)])
    tok.add_special_tokens([AddedToken("<mask>", special=True, lstrip=True, normalized=False)])
    assert tok.token_to_id(DEEPSEEK_BOS) == 0, tok.token_to_id(DEEPSEEK_BOS)
    return tok


def build_o200k(lines):
    tok = empty_tokenizer(None, O200K_PRE_TOKENIZER, None, QWEN3_DECODER, ignore_merges=True)
    tok.train_from_iterator(lines, byte_level_trainer(2500))
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False),
                            AddedToken("<|im_start|>", special=True, normalized=False),
                            AddedToken("<|im_end|>", special=True, normalized=False)])
    return tok


def build_byte_fallback(lines):
    pre = {"type": "Split", "pattern": {"Regex": " ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+"},
           "behavior": "Isolated", "invert": False}
    dec = {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}
    tok = empty_tokenizer(None, pre, None, dec)
    tok.train_from_iterator(lines, trainers.BpeTrainer(vocab_size=1200, min_frequency=2, show_progress=False,
                                                       limit_alphabet=90))
    doc = json.loads(tok.to_str())
    vocab = doc["model"]["vocab"]
    next_id = max(vocab.values()) + 1
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = next_id
        next_id += 1
    doc["model"]["byte_fallback"] = True
    tok = Tokenizer.from_str(json.dumps(doc))
    tok.add_special_tokens([AddedToken("<|endoftext|>", special=True, normalized=False)])
    return tok


def record(tok, name, strings):
    cases = []
    for text in strings:
        tok.encode_special_tokens = False
        ids = tok.encode(text, add_special_tokens=False).ids
        ids_special = tok.encode(text, add_special_tokens=True).ids
        tok.encode_special_tokens = True
        ids_as_text = tok.encode(text, add_special_tokens=False).ids
        tok.encode_special_tokens = False
        stream = decoders.DecodeStream(skip_special_tokens=False)
        steps = [stream.step(tok, i) for i in ids]
        cases.append({"text": text, "ids": ids, "ids_special": ids_special, "ids_as_text": ids_as_text,
                      "decoded": tok.decode(ids, skip_special_tokens=False),
                      "decoded_skip": tok.decode(ids, skip_special_tokens=True),
                      "stream": steps})
    return {"tokenizers_version": tokenizers.__version__, "variant": name, "cases": cases}


def record_pre_tokenizers(strings):
    out = []
    blocks = {"qwen3": QWEN3_PRE_TOKENIZER, "deepseek_v3": DEEPSEEK_PRE_TOKENIZER, "o200k": O200K_PRE_TOKENIZER}
    blocks.update(EXTRA_PRE_TOKENIZERS)
    for name, block in blocks.items():
        # A tokenizer with this pre-tokenizer and nothing else; pre_tokenize_str skips normalizers.
        tok = empty_tokenizer(None, block, None, None)
        pre = tok.pre_tokenizer
        cases = [{"text": s, "pieces": [p for p, _ in pre.pre_tokenize_str(s)]} for s in strings]
        out.append({"name": name, "pre_tokenizer": block, "cases": cases})
    return {"tokenizers_version": tokenizers.__version__, "pre_tokenizers": out}


def compact(value):
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def write_cases(path, rec):
    """One case per line, so that a diff of two fixture versions reads case by case."""
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"tokenizers_version":%s,"variant":%s,"cases":[\n' % (compact(rec["tokenizers_version"]),
                                                                        compact(rec["variant"])))
        f.write(",\n".join(compact(c) for c in rec["cases"]))
        f.write("\n]}\n")


def write_pre_tokenizers(path, rec):
    with open(path, "w", encoding="utf-8") as f:
        f.write('{"tokenizers_version":%s,"pre_tokenizers":[\n' % compact(rec["tokenizers_version"]))
        blocks = []
        for block in rec["pre_tokenizers"]:
            blocks.append('{"name":%s,"pre_tokenizer":%s,"cases":[\n%s\n]}' % (
                compact(block["name"]), compact(block["pre_tokenizer"]),
                ",\n".join(compact(c) for c in block["cases"])))
        f.write(",\n".join(blocks))
        f.write("\n]}\n")


def main():
    out_dir = sys.argv[1] if len(sys.argv) > 1 else "out"
    work = os.path.join(out_dir, "work")
    os.makedirs(work, exist_ok=True)
    lines = corpus(1234)
    strings = test_strings(5678)
    summary = [f"tokenizers {tokenizers.__version__}", f"{len(strings)} test strings, {len(lines)} corpus lines"]
    builders = {"qwen3": build_qwen3, "deepseek_v3": build_deepseek, "o200k": build_o200k,
                "byte_fallback": build_byte_fallback}
    for name, build in builders.items():
        try:
            tok = build(lines)
            os.makedirs(os.path.join(work, name), exist_ok=True)
            tok.save(os.path.join(work, name, "tokenizer.json"))
            rec = record(tok, name, strings)
            write_cases(os.path.join(work, name, "cases.json"), rec)
            n_ids = sum(len(c["ids"]) for c in rec["cases"])
            summary.append(f"{name}: vocab {tok.get_vocab_size()}, {len(rec['cases'])} cases, {n_ids} ids")
        except Exception:
            summary.append(f"{name}: FAILED\n{traceback.format_exc()}")
    try:
        write_pre_tokenizers(os.path.join(work, "pretokenizers.json"),
                             record_pre_tokenizers(strings[:len(HAND_CASES) + 60]))
        summary.append("pretokenizers: ok")
    except Exception:
        summary.append(f"pretokenizers: FAILED\n{traceback.format_exc()}")
    with tarfile.open(os.path.join(out_dir, "tokenizer-fixtures.tar.gz"), "w:gz") as tar:
        tar.add(work, arcname=".")
    with open(os.path.join(out_dir, "summary.txt"), "w") as f:
        f.write("\n".join(summary) + "\n")
    print("\n".join(summary))


if __name__ == "__main__":
    main()

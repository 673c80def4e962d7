"""Lesson 14 (what changed since GPT-2): the quiz's answer key."""

import math

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=128,  # 2 x 32 x 8 x 128 x 2 bytes = 131,072 bytes
        why=say("2 (keys and values) x 32 layers x 8 kv heads x 128 numbers x 2 bytes = 131,072 bytes = 128 KiB; with "
                "a kv head per query head (32) it would be 512 KiB",
                "2（键和值）x 32 层 x 8 个 kv 头 x 128 个数 x 2 字节 = 131,072 字节 = 128 KiB；如果每个查询头都有自己的"
                " kv 头（32 个），就是 512 KiB"),
        hint=say("the cache holds 2 (keys and values) x layers x kv heads x head size numbers per token: count the kv "
                 "heads, not the query heads; 1 KiB is 1024 bytes",
                 "每个词元在缓存里占 2（键和值）x 层数 x kv 头数 x 头的大小 个数：数的是 kv 头，不是查询头；"
                 "1 KiB 是 1024 字节"),
    ),
    2: Question(
        answer=5 / math.sqrt(7),
        why=say("mean(x²) = (1 + 1 + 1 + 25) / 4 = 7, so every value is divided by sqrt(7) = 2.646: 5 becomes 1.890. "
                "LayerNorm would first subtract the mean, 2",
                "mean(x²) = (1 + 1 + 1 + 25) / 4 = 7，所以每个值都除以 sqrt(7) = 2.646：5 变成 1.890。LayerNorm 则会先减去"
                "均值 2"),
        hint=say("RMSNorm subtracts nothing: divide each value by sqrt(mean(x²)), the root mean square of all four",
                 "RMSNorm 什么也不减：把每个值除以 sqrt(mean(x²))，即四个值的均方根"),
    ),
    3: Question(
        answer=3,
        why=say("n_rep = 32 / 8 = 4 query heads per kv head, in a row: heads 12 to 15 read kv head 13 // 4 = 3",
                "n_rep = 32 / 8 = 4，每个 kv 头连续服务 4 个查询头：第 12 到 15 个头读第 13 // 4 = 3 个 kv 头"),
        hint=say("the copies of each kv head sit next to each other (repeat_interleave): query head h reads kv head "
                 "h // n_rep",
                 "每个 kv 头的副本挨在一起（repeat_interleave）：第 h 个查询头读第 h // n_rep 个 kv 头"),
        rel_tol=0.0,
    ),
    4: Question(
        answer=2 * math.pi * 10000 ** (62 / 64),  # about 47,117
        why=say("pair 31 turns 10000^(-62/64) = 1.33e-4 radians per position, so a full turn, 2π, takes about "
                "47,117 positions; pair 0 turns once every 2π = 6.3 positions",
                "第 31 对每个位置转 10000^(-62/64) = 1.33e-4 弧度，所以转满一圈 2π 大约要 47,117 个位置；第 0 对每 "
                "2π = 6.3 个位置就转一圈"),
        hint=say("pair i turns theta^(-2i/d) radians per position; a full turn is 2π radians",
                 "第 i 对每个位置转 theta^(-2i/d) 弧度；一整圈是 2π 弧度"),
    ),
    5: Question(
        answer="a",
        why=say("the query turns by 1,000 steps' worth of angle and so does the key: the difference of their angles, "
                "and so the score, stay the same; it depends only on the offset, 10",
                "查询多转了 1,000 个位置的角度，键也是：两者角度之差不变，分数也就不变；它只取决于偏移 10"),
        hint=say("a rotation keeps dot products: rotating q by a and k by b scores like q rotated by a - b against k",
                 "旋转保持点积：q 转 a、k 转 b 的分数，与 q 转 a - b 再和 k 点积一样"),
    ),
}

"""Lesson 08 (generation): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=0.9820137900379085,  # e^4 / (e^4 + 1)
        why=say("logits / 0.5 = [4, 0], and softmax([4, 0]) gives e^4 / (e^4 + 1) = 0.982 to the first token (0.881 at "
                "temperature 1): a temperature below 1 sharpens the distribution",
                "logits / 0.5 = [4, 0]，softmax([4, 0]) 给第一个词元 e^4 / (e^4 + 1) = 0.982（温度 1 时是 0.881）："
                "温度低于 1 会让分布更尖锐"),
        hint=say("divide the logits by the temperature first, then take the softmax (your apply_temperature does both)",
                 "先把 logits 除以温度，再做 softmax（你写的 apply_temperature 两步都做了）"),
    ),
    2: Question(
        answer=2,
        why=say("sorted: 0.5, 0.3, 0.15, 0.05; the mass before each is 0, 0.5, 0.8, 0.95, and only the first two are "
                "below 0.7: 0.3 takes the total past p and stays, 0.15 and 0.05 go",
                "排序后是 0.5、0.3、0.15、0.05；每个词元之前的累计概率是 0、0.5、0.8、0.95，只有前两个低于 0.7："
                "0.3 让总和越过 p，所以留下；0.15 和 0.05 被去掉"),
        hint=say("sort from largest to smallest, then keep each token while the mass before it (itself not "
                 "included) is still below p",
                 "从大到小排序，然后只要某个词元之前的累计概率（不含它自己）还低于 p，就保留它"),
        rel_tol=0.0,
    ),
    3: Question(
        answer=5050,
        why=say("step n runs the whole text, n positions: 1 + 2 + ... + 100 = 100 x 101 / 2 = 5050, which is "
                "(n + 1) / 2 = 50.5 times the cache's 100",
                "第 n 步要把整段文本（n 个位置）重新算一遍：1 + 2 + ... + 100 = 100 x 101 / 2 = 5050，"
                "是有缓存时 100 个位置的 (n + 1) / 2 = 50.5 倍"),
        hint=say("how long is the text at step 1, at step 2, ..., at step 100? Without a cache each step runs all "
                 "of it",
                 "第 1 步、第 2 步……第 100 步时文本各有多长？没有缓存时每一步都要把整段文本跑一遍"),
        rel_tol=0.0,
    ),
    4: Question(
        answer=96,
        why=say("2 (keys and values) x 24 layers x 1024 positions x 1024 numbers x 2 bytes = 100,663,296 bytes = "
                "96 MiB, for one sequence",
                "2（键和值）x 24 层 x 1024 个位置 x 1024 个数 x 2 字节 = 100,663,296 字节 = 96 MiB，这只是一条序列"),
        hint=say("the cache holds 2 (keys and values) x layers x positions x width numbers; 1 MiB is 2**20 bytes",
                 "缓存里有 2（键和值）x 层数 x 位置数 x 宽度 个数；1 MiB 是 2**20 字节"),
    ),
    5: Question(
        answer="a",
        why=say("the penalty lowers the logits of the tokens already in the text, so the argmax moves to another "
                "token where the loop would go on; at temperature 0 top-k and top-p keep only the argmax anyway",
                "惩罚会压低文本中已经出现过的词元的 logits，于是在循环本该继续的地方 argmax 换成了别的词元；"
                "而温度为 0 时，top-k 和 top-p 反正只留下 argmax"),
        hint=say("at temperature 0 all the mass is on the argmax: what is left for top-k or top-p to cut?",
                 "温度为 0 时，全部概率都在 argmax 上：top-k 或 top-p 还能剪掉什么？"),
    ),
}

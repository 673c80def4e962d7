"""Lesson 03 (attention): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=1.0,
        why=say("softmax of a single score is [1.0], whatever the score: all the weight goes to the only key, not "
                "[0.5, 0.5] as the article says",
                "单个分数的 softmax 是 [1.0]，不论分数是多少：全部权重都给唯一的那个键，而不是文章说的 [0.5, 0.5]"),
        hint=say("softmax divides e^s by the sum of e^s over all keys; with one key, what is that sum?",
                 "softmax 用 e^s 除以所有键的 e^s 之和；只有一个键时，这个和是什么？"),
    ),
    2: Question(
        answer=64.0,
        why=say("q·k is a sum of d_k independent products, each of variance 1, and variances of independent terms "
                "add: d_k = 64. Dividing by sqrt(64) = 8 brings it back to 1",
                "q·k 是 d_k 个相互独立、方差各为 1 的乘积之和，独立项的方差相加：d_k = 64。除以 sqrt(64) = 8 后方差回到 1"),
        hint=say("what is the variance of one product q_i k_i? And of a sum of independent terms?",
                 "单个乘积 q_i k_i 的方差是多少？相互独立的项之和的方差又是多少？"),
    ),
    3: Question(
        answer=21,
        why=say("the lower triangle with its diagonal: query i sees keys 0..i, i + 1 of them, so 1 + 2 + ... + 6 = 21",
                "含对角线的下三角：查询 i 能看到键 0..i，共 i + 1 个，所以 1 + 2 + ... + 6 = 21"),
        hint=say("count row by row: how many keys may the query in row i see? Do not forget the diagonal",
                 "逐行数：第 i 行的查询可以看到几个键？别忘了对角线"),
    ),
    4: Question(
        answer=0.75,
        why=say("e^0 = 1 and e^ln3 = 3, so the weights are 1/4 and 3/4: softmax turns a score difference d into a "
                "weight ratio e^d",
                "e^0 = 1，e^ln3 = 3，所以权重是 1/4 和 3/4：softmax 把分数差 d 变成权重之比 e^d"),
        hint=say("exponentiate each score, then divide by the sum of the exponentials; e^ln3 is a simple number",
                 "先对每个分数取指数，再除以这些指数之和；e^ln3 是个很简单的数"),
    ),
    5: Question(
        answer="b",
        why=say("each row of the scores is one query; softmax over the last axis (the keys) makes each query's "
                "weights a distribution over the keys it may see",
                "分数的每一行是一个查询；在最后一个轴（键）上做 softmax，使每个查询的权重成为它可见的各个键上的一个分布"),
        hint=say("the rows of the scores are queries and the columns keys; whose weights must sum to 1?",
                 "分数的行是查询、列是键；谁的权重之和必须为 1？"),
    ),
}

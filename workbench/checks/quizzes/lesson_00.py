"""Lesson 00 (welcome): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=36,
        why=say("6 layers x 6 heads: trace.attention is (layer, batch, head, query, key) = (6, 1, 6, T, T), one T x T "
                "pattern per layer and head",
                "6 层 × 6 个头：trace.attention 的形状是 (layer, batch, head, query, key) = (6, 1, 6, T, T)，"
                "每层每个头各有一个 T × T 的模式"),
        hint=say("read the shape of trace.attention: which axes count layers and heads? Multiply those two",
                 "看 trace.attention 的形状：哪两个轴分别数的是层和头？把这两个数相乘"),
    ),
    2: Question(
        answer=45,
        why=say("the strict upper triangle of a 10 x 10 grid: 10 x 9 / 2 = 45 entries where a key lies after its "
                "query; the causal mask gives them weight 0",
                "10 × 10 网格的严格上三角：10 × 9 / 2 = 45 个元素，其中键位于查询之后；因果掩码让它们的权重为 0"),
        hint=say("row i (a query) may see keys 0..i. How many keys of row i lie in the future? Add that up over the 10 rows",
                 "第 i 行（一个查询）可以看到键 0..i。第 i 行有多少个键位于未来？把 10 行的个数加起来"),
    ),
    3: Question(
        answer=1.0,
        why=say("each row is a softmax over the keys a query can see: a probability distribution, so it sums to 1",
                "每一行是一个查询对它能看到的键做的 softmax，是一个概率分布，所以和为 1"),
        hint=say("each row is the output of a softmax; what does softmax guarantee about its outputs?",
                 "每一行都是 softmax 的输出；softmax 对它的输出保证了什么？"),
        rel_tol=1e-4,
    ),
    4: Question(
        answer="b",
        why=say("the logits at position i are the model's guess of the token at position i + 1, so the last position's "
                "are its guess of the token after the prompt: the one generation samples",
                "位置 i 的 logits 是模型对位置 i + 1 上词元的猜测，所以最后一个位置的 logits 猜的是提示词之后的词元，"
                "也就是生成时要采样的那个"),
        hint=say("logits has one row per position and one column per vocabulary token; what does the row of a position "
                 "predict?",
                 "logits 每个位置一行、词表中每个词元一列；某个位置的那一行预测的是什么？"),
    ),
}

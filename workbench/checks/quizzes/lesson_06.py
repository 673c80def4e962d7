"""Lesson 06 (assemble GPT): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=3_505_152,
        rel_tol=0.0,
        why=say("786,432 (wte) + 49,152 (wpe) + 6 × 444,864 (blocks) + 384 (ln_f) = 3,505,152, the shipped model's own "
                "count: lm_head is wte and is not counted again",
                "786,432（wte）+ 49,152（wpe）+ 6 × 444,864（块）+ 384（ln_f）= 3,505,152，正是课程自带模型的参数量："
                "lm_head 就是 wte，不重复计数"),
        hint=say("call your count_params with (6, 192, 4096, 256); compare with model.num_params() of the shipped "
                 "model",
                 "用 (6, 192, 4096, 256) 调用你的 count_params；可以与课程自带模型的 model.num_params() 对照"),
    ),
    2: Question(
        answer=163_037_184,
        rel_tol=0.0,
        why=say("124,439,808 + 50,257 × 768 = 163,037,184: tying saves 38,597,376 parameters, almost a third of "
                "GPT-2 small",
                "124,439,808 + 50,257 × 768 = 163,037,184：共享嵌入省下 38,597,376 个参数，几乎是 GPT-2 small 的三分之一"),
        hint=say("an untied lm_head is one more matrix of vocab_size × n_embd, with no bias; add it to GPT-2 "
                 "small's count",
                 "不共享的 lm_head 就是多一个 vocab_size × n_embd 的矩阵，没有偏置；把它加到 GPT-2 small 的参数量上"),
    ),
    3: Question(
        answer=112.097,
        rel_tol=0.005,
        why=say("174.6 billion / 1.56 billion ≈ 112: the article's \"100 times\" is the right round figure",
                "1746 亿 / 15.6 亿 ≈ 112：文章说的“100 倍”是一个合适的约数"),
        hint=say("divide counts[\"GPT-3\"] by counts[\"GPT-2 XL\"], the largest GPT-2, not GPT-2 small",
                 "用 counts[\"GPT-3\"] 除以 counts[\"GPT-2 XL\"]，即最大的 GPT-2，而不是 GPT-2 small"),
    ),
    4: Question(
        answer="b",
        why=say("a head's row has one weight per position the query can see (16 here), summing to 1; the distribution "
                "over the 4,096 tokens comes from lm_head(ln_f(h))",
                "一个头的一行在查询能看到的每个位置（这里是 16 个）上各有一个权重，总和为 1；4,096 个词元上的分布来自 "
                "lm_head(ln_f(h))"),
        hint=say("look at the shape the lesson printed for the last position's attention weights, and at what its rows "
                 "add up over",
                 "看本课为最后一个位置的注意力权重打印出的形状，以及每一行是在哪个维度上求和的"),
    ),
}

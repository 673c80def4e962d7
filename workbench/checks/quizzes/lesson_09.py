"""Lesson 09 (looking inside: attention scores, the logit lens, ablation, induction heads): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=13 / 36,
        rel_tol=2e-3,
        why=say("query i spreads 1 over i + 1 keys, so the previous token gets 1/(i + 1); over the queries 1, 2, 3: "
                "(1/2 + 1/3 + 1/4) / 3 = 13/36 = 0.361",
                "查询 i 把 1 平分给 i + 1 个键，前一个词元得到 1/(i + 1)；对查询 1、2、3 取平均："
                "(1/2 + 1/3 + 1/4) / 3 = 13/36 = 0.361"),
        hint=say("query 0 has no previous token and is left out; at query i the head sees i + 1 keys. Build the "
                 "4 x 4 pattern as section 2 builds `evenly` and pass it to your previous_token_score",
                 "查询 0 没有前一个词元，不计入；查询 i 能看到 i + 1 个键。像第 2 节构造 `evenly` 那样构造 4 x 4 的"
                 "注意力模式，再交给你的 previous_token_score"),
    ),
    2: Question(
        answer=37,
        rel_tol=0.0,
        why=say("6 layers x 6 heads = 36 runs with one head off, plus the run with every head on that each effect is "
                "measured against",
                "6 层 x 6 个头 = 36 次各关掉一个头的运行，再加上一次所有头都开着的运行，每个效应都以它为基准"),
        hint=say("one run per head switched off (how many heads does the shipped model have?), and do not forget the "
                 "run that every effect is compared with",
                 "每关掉一个头跑一次（课程自带模型共有多少个头？），别忘了所有效应都要与之比较的那一次运行"),
    ),
    3: Question(
        answer=5,
        rel_tol=0.0,
        why=say("position 20 holds the token first seen at 20 − 16 = 4; the token that followed it, at 5, is the one "
                "to copy: key i − period + 1",
                "位置 20 上的词元第一次出现在 20 − 16 = 4；它后面的那个词元在位置 5，就是要复制的词元：键 i − period + 1"),
        hint=say("first find where the current token appeared in the first copy, then remember that an induction head "
                 "looks at the token that came right after it",
                 "先找出当前词元在第一份拷贝中出现的位置，再想一想：归纳头看的是紧跟在它后面的那个词元"),
    ),
    4: Question(
        answer=0.2812,
        rel_tol=0.01,
        why=say("about 0.28: on a passage it has never read, the model gives the right next token a bit over a "
                "quarter of its probability on average, and this last read is exactly its output distribution",
                "约 0.28：在从未读过的文本上，模型平均把略多于四分之一的概率给了真正的下一个词元；最后一次读取正是"
                "模型自己的输出分布"),
        hint=say("the table's rows are kept in `reads` as (name, mean p(next token)); the last read is after the MLP "
                 "of the last layer. Answer a probability, not a percentage",
                 "表中每一行都以 (名称, 平均 p(下一个词元)) 存在 `reads` 里；最后一次读取在最后一层的 MLP 之后。答一个"
                 "概率，不是百分数"),
    ),
    5: Question(
        answer="b",
        why=say("dropout acts in the forward pass whenever the model is in training mode: the loss on the same text "
                "came out higher than in eval mode, and different on each of two runs",
                "只要模型处于训练模式，dropout 就在前向传播中起作用：同一段文本的损失比评估模式下高，两次运行的结果"
                "也不一样"),
        hint=say("look at the last line the ablation cell of section 6 printed: the same loss, computed twice with "
                 "dropout on",
                 "看第 6 节消融单元格打印的最后一行：同一个损失，在 dropout 开启时算了两次"),
    ),
}

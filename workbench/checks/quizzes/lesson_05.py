"""Lesson 05 (the MLP, GELU, LayerNorm and the residual stream): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=-0.158808,
        rel_tol=2e-3,
        why=say("0.5·(−1)·(1 + tanh(√(2/π)·(−1 − 0.044715))) = −0.1588: GELU lets a small negative value through, "
                "where ReLU gives 0",
                "0.5·(−1)·(1 + tanh(√(2/π)·(−1 − 0.044715))) = −0.1588：GELU 让一个小的负值通过，而 ReLU 给出 0"),
        hint=say("put x = −1 into 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), or call your gelu on torch.tensor(-1.0); "
                 "the result is negative",
                 "把 x = −1 代入 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))，或对 torch.tensor(-1.0) 调用你的 gelu；"
                 "结果是负数"),
    ),
    2: Question(
        answer=0.906,
        rel_tol=0.01,
        why=say("about 91% of the pre-activations are negative: ReLU would zero all of them, GELU passes them on as "
                "small negatives, which is why swapping the two changes the model so much",
                "约 91% 的激活前值是负数：ReLU 会把它们全部变成 0，GELU 则把它们作为小的负值传下去，所以两者互换会让"
                "模型变化这么大"),
        hint=say("count the entries of `pre` (every layer's pre-activations) below 0 and divide by how many there are; "
                 "a fraction, not a percentage",
                 "数一数 `pre`（各层的激活前值）中小于 0 的元素，再除以元素总数；答一个比例，不是百分数"),
    ),
    3: Question(
        answer=-1.341635,
        rel_tol=1e-3,
        why=say("mean 2.5, biased variance 1.25: (1 − 2.5) / √(1.25 + 1e-5) = −1.3416",
                "均值 2.5，有偏方差 1.25：(1 − 2.5) / √(1.25 + 1e-5) = −1.3416"),
        hint=say("subtract the mean, then divide by the square root of the variance that divides by C (here 4), "
                 "not by C − 1",
                 "先减去均值，再除以方差的平方根；方差要除以 C（这里是 4），不是 C − 1"),
    ),
    4: Question(
        answer=295_872,
        rel_tol=0.0,
        why=say("c_fc: 192 × 768 + 768, c_proj: 768 × 192 + 192; 295,872 in all",
                "c_fc：192 × 768 + 768，c_proj：768 × 192 + 192；合计 295,872"),
        hint=say("the MLP widens 192 to 4 × 192 and comes back; count both weight matrices and both bias vectors",
                 "MLP 把 192 加宽到 4 × 192 再投影回来；两个权重矩阵和两个偏置向量都要算"),
    ),
    5: Question(
        answer="b",
        why=say("in post-LN every LayerNorm on the main path rescales the gradient on its way down, so the layers "
                "near the output get the most and those near the input the least (pre-LN is the other way round)",
                "在 post-LN 中，主路径上的每个 LayerNorm 都会在梯度往下传时重新缩放它，所以靠近输出的层得到的最多，"
                "靠近输入的层最少（pre-LN 正好相反）"),
        hint=say("read the post-LN curve of the plot (or the printed layer 0 and layer 23 values): where is it "
                 "highest?",
                 "看图中 post-LN 的曲线（或打印出的第 0 层和第 23 层的值）：它在哪里最高？"),
    ),
}

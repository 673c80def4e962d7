"""Lesson 07 (training): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=1.0397207708399179,  # -(ln 0.25 + ln 0.5) / 2
        why=say("the loss is the mean of -log p over the positions: (-ln 0.25 - ln 0.5) / 2 = (1.386 + 0.693) / 2",
                "损失是各位置 -log p 的平均：(-ln 0.25 - ln 0.5) / 2 = (1.386 + 0.693) / 2"),
        hint=say("take -log p at each kind of position (natural log), then average over the positions; averaging "
                 "the probabilities first gives a different number",
                 "先在每一类位置上取 -log p（自然对数），再对位置求平均；先平均概率会得到另一个数"),
    ),
    2: Question(
        answer=3.1622776601683795,  # (1 - 0.9) / sqrt(1 - 0.999)
        why=say("after one step m = (1 - beta1) g and v = (1 - beta2) g², so m / sqrt(v) = 0.1 / sqrt(0.001) = 3.16: "
                "the uncorrected first step is more than three times lr",
                "一步之后 m = (1 - beta1) g，v = (1 - beta2) g²，所以 m / sqrt(v) = 0.1 / sqrt(0.001) = 3.16：未修正的第一步"
                "超过 lr 的三倍"),
        hint=say("write m and v after one step from m = v = 0 with the gradient g, then divide m by sqrt(v); the "
                 "lesson's uncorrected_steps computes it too",
                 "从 m = v = 0 出发，用梯度 g 写出一步之后的 m 和 v，再用 m 除以 sqrt(v)；课中的 uncorrected_steps "
                 "也能算出它"),
    ),
    3: Question(
        answer=0.0011,  # min_lr + (lr - min_lr) / 2: halfway through the decay
        why=say("step 275 is halfway from the end of the warmup (50) to max_steps (500), where the cosine factor "
                "0.5 * (1 + cos(pi / 2)) is 0.5: 2e-4 + 0.5 * (2e-3 - 2e-4) = 1.1e-3",
                "第 275 步正好在预热结束（50）和 max_steps（500）的中间，余弦因子 0.5 * (1 + cos(pi / 2)) 等于 0.5："
                "2e-4 + 0.5 * (2e-3 - 2e-4) = 1.1e-3"),
        hint=say("read lr, min_lr, warmup_steps and max_steps of training.preset(\"tiny-char\"), then find where "
                 "step 275 lies in the decay (its progress p); the decay runs from lr down to min_lr, not to 0",
                 "读出 training.preset(\"tiny-char\") 的 lr、min_lr、warmup_steps 和 max_steps，再找出第 275 步在衰减"
                 "阶段中的位置（进度 p）；衰减是从 lr 降到 min_lr，而不是降到 0"),
    ),
    4: Question(
        answer=6.5873,  # 32 * 1024 * 50,257 * 4 bytes / 1e9
        why=say("32 x 1,024 positions, each a one-hot vector of 50,257 floats of 4 bytes: 6.59 GB for the targets "
                "of one batch, where the token ids take 32 x 1,024 x 8 bytes = 262 kB",
                "32 x 1,024 个位置，每个位置一个长 50,257 的独热向量，每个浮点数 4 字节：一个批次的目标就要 6.59 GB，"
                "而词元 id 只要 32 x 1,024 x 8 字节 = 262 kB"),
        hint=say("count the floats (one per position and per vocabulary entry), multiply by the bytes of a float32, "
                 "and divide by 10**9 (not 2**30)",
                 "数一数有多少个浮点数（每个位置、每个词表条目各一个），乘以一个 float32 的字节数，再除以 10**9（不是 "
                 "2**30）"),
        rel_tol=1e-2,
    ),
    5: Question(
        answer="b",
        why=say("a language model learns the distribution of its training text: trained on text without stop words, "
                "it gives them almost no probability and writes text without them",
                "语言模型学到的是训练文本的分布：用去掉停用词的文本训练，它几乎不给停用词概率，写出的文本也没有停用词"),
        hint=say("the loss rewards the model for predicting exactly the text it is shown; what does the last section's "
                 "table say about the text a model expects?",
                 "损失奖励的是准确预测它所看到的文本；上一节的表格说明了模型期待的是什么样的文本？"),
    ),
}

"""Lesson 11 (real GPT-2 weights): the quiz's answer key. The answers hold whether the lesson loaded the real GPT-2
or built its small random stand-in offline."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer="b",
        why=say("attn.c_proj is [C, C]: its transpose has the same shape, so it loads silently and the model is "
                "quietly wrong; c_attn [C, 3C], c_fc [C, 4C] and mlp.c_proj [4C, C] raise a shape error",
                "attn.c_proj 是 [C, C]：它的转置形状相同，所以载入时不会报错，模型却悄悄地错了；"
                "c_attn [C, 3C]、c_fc [C, 4C] 和 mlp.c_proj [4C, C] 都会引发形状错误"),
        hint=say("a matrix loaded untransposed escapes the shape check only if it has as many rows as columns; "
                 "look at the shapes listed in section 1",
                 "没有转置的矩阵只有在行数等于列数时才能躲过形状检查；看看第 1 节列出的形状"),
    ),
    2: Question(
        answer=196,
        why=say("4 outside the blocks (tok_emb, pos_emb, and norm_f's weight and bias) and 16 per layer (norm1, "
                "norm2, q, k, v, out, up and down, each a weight and a bias): 4 + 16 × 12 = 196",
                "块之外 4 个（tok_emb、pos_emb，以及 norm_f 的权重和偏置），每层 16 个（norm1、norm2、q、k、v、"
                "out、up、down，各有权重和偏置）：4 + 16 × 12 = 196"),
        hint=say("count the names outside the blocks and the names of one block in what convert_hf_weights returns "
                 "for the lesson's checkpoint, then scale to 12 layers; lm_head and the mask buffers get no name",
                 "在 convert_hf_weights 对本课检查点返回的字典里，数一数块之外的名字和一个块的名字，再换算到 12 层；"
                 "lm_head 和掩码缓冲区没有对应的名字"),
    ),
    3: Question(
        answer=0.2395447662,
        rel_tol=1e-2,
        why=say("softmax gives token 0 the probability e²/(e² + 2) ≈ 0.787, and −ln 0.787 ≈ 0.240 nats",
                "softmax 给词元 0 的概率是 e²/(e² + 2) ≈ 0.787，−ln 0.787 ≈ 0.240 奈特"),
        hint=say("turn the logits into probabilities with a softmax first, then take −log (the natural log) of the "
                 "target's probability",
                 "先用 softmax 把 logits 变成概率，再对目标的概率取 −log（自然对数）"),
    ),
    4: Question(
        answer="b",
        why=say("forward() scores every position that already exists, one distribution each, and writes nothing: "
                "max_length and num_return_sequences vanish into **kwargs; generation is a loop around it",
                "forward() 为已有的每个位置打分，每个位置一个分布，不写出任何东西：max_length 和 "
                "num_return_sequences 被 **kwargs 吞掉了；生成是围绕它的一个循环"),
        hint=say("look at the shapes that the cell of section 4.5 prints for the input and for the logits",
                 "看看第 4.5 节的单元格为输入和 logits 打印的形状"),
    ),
    5: Question(
        answer=38597376,
        why=say("an untied lm_head is its own [50257, 768] matrix with no bias: 50,257 × 768 = 38,597,376 "
                "parameters, nearly a third of GPT-2 small's 124 million",
                "不绑定的 lm_head 是一个单独的 [50257, 768] 矩阵，没有偏置：50,257 × 768 = 38,597,376 个参数，"
                "接近 GPT-2 small 的 1.24 亿参数的三分之一"),
        hint=say("lm_head maps a vector of width 768 to one logit per token of the vocabulary, with no bias: how "
                 "many weights does that take?",
                 "lm_head 把一个宽 768 的向量映射为词表中每个词元一个 logit，没有偏置：这需要多少个权重？"),
    ),
}

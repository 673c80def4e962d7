"""Lesson 10 (encoder-decoder vs decoder-only): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=36,
        why=say("4 heads, each with one weight per pair of a decoder position and a source position: 4 × 3 × 3 = 36 "
                "(a T × S matrix per head, with no mask)",
                "4 个头，每个头对每一对（解码器位置，源位置）各有一个权重：4 × 3 × 3 = 36"
                "（每个头一个 T × S 矩阵，没有掩码）"),
        hint=say("count one weight per head, per decoder position and per source position: how many of each does "
                 "one held-out sentence have? (cross_patterns[0] has one row per sentence)",
                 "每个头、每个解码器位置、每个源位置各有一个权重：一个留出句子各有多少个？"
                 "（cross_patterns[0] 的第一维是句子）"),
    ),
    2: Question(
        answer="a",
        why=say("the weights come from the queries and the keys only; the values are averaged once the weights are "
                "fixed, so the output is 10 times as large while the weights stay where they were",
                "权重只由查询和键决定；值是在权重定下之后才被平均的，所以输出变为 10 倍，而权重保持不变"),
        hint=say("which of Q, K and V appear inside softmax(QKᵀ/√d_k)? (the cell of section 1 that scales the "
                 "values prints the weights)",
                 "Q、K、V 中哪些出现在 softmax(QKᵀ/√d_k) 里面？（第 1 节放大值的那个单元格打印了权重）"),
    ),
    3: Question(
        answer=0.5,
        why=say("a row of idx has S + U = 6 positions: the S = 3 of the prompt get -100 and the U = 3 that predict "
                "the target are scored, so 3 of 6",
                "idx 的一行有 S + U = 6 个位置：提示词的 S = 3 个位置是 -100，预测目标的 U = 3 个位置参与计分，"
                "所以是 6 个中的 3 个"),
        hint=say("count the positions of one row of idx, and those whose next token is still part of the prompt "
                 "(the table in section 5)",
                 "数一数 idx 的一行有几个位置，其中有几个位置的下一个词元仍属于提示词（见第 5 节的表格）"),
    ),
    4: Question(
        answer=16768,
        why=say("the cross-attention: q_proj 64·64 + 64, kv_proj 64·128 + 128 and c_proj 64·64 + 64 make 16,640, "
                "and its LayerNorm ln_3 adds 64 + 64: 16,768",
                "交叉注意力：q_proj 64·64 + 64，kv_proj 64·128 + 128，c_proj 64·64 + 64，共 16,640；"
                "再加上它前面的 LayerNorm（ln_3）的 64 + 64：16,768"),
        hint=say("the two blocks share self-attention, an MLP and two LayerNorms; count every weight and bias of "
                 "what only the decoder block has (sum(p.numel() for p in module.parameters()))",
                 "两种块都有自注意力、MLP 和两个 LayerNorm；把只有解码器块才有的部分的所有权重和偏置都数上"
                 "（sum(p.numel() for p in module.parameters())）"),
    ),
    5: Question(
        answer="a",
        why=say("in the summed form both sublayers read the same x, and in layer 0 x at position t is the token "
                "embedding plus the position embedding of t: nothing from the other positions reaches the query "
                "(the swap in section 4 moved it by 0%)",
                "在求和形式中，两个子层读的是同一个 x；而在第 0 层，位置 t 的 x 就是该词元的嵌入加上位置 t 的嵌入："
                "其他位置的信息到不了查询（第 4 节的替换实验中它变化了 0%）"),
        hint=say("in the summed form, what does ln_2 read in the first layer, and what is that vector made of "
                 "(decoder_embedding in section 4)?",
                 "在求和形式中，第一层的 ln_2 读的是什么？这个向量由什么构成（见第 4 节的 decoder_embedding）？"),
    ),
}

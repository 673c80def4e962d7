"""Lesson 04 (multi-head attention): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=1_771_776,
        rel_tol=0.0,
        why=say("c_attn maps 768 to 3 × 768 = 2304: 768 × 2304 weights + 2304 biases = 1,771,776, three quarters of "
                "the attention's parameters",
                "c_attn 把 768 映射到 3 × 768 = 2304：768 × 2304 个权重 + 2304 个偏置 = 1,771,776，占注意力参数的四分之三"),
        hint=say("c_attn produces queries, keys and values at once: its output is 3 × n_embd wide, and it has a bias",
                 "c_attn 一次算出查询、键和值：它的输出宽 3 × n_embd，而且有偏置"),
    ),
    2: Question(
        answer=2,
        rel_tol=0.0,
        why=say("head_size = 8 / 4 = 2, so head h holds channels 2h and 2h + 1: channel 5 is in head 2 (as its "
                "second number)",
                "head_size = 8 / 4 = 2，所以第 h 个头拿到通道 2h 和 2h + 1：通道 5 在头 2 里（是它的第二个数）"),
        hint=say("view(B, T, n_head, head_size) cuts each position's channels into consecutive groups of head_size",
                 "view(B, T, n_head, head_size) 把每个位置的通道按顺序切成每组 head_size 个"),
    ),
    3: Question(
        answer=23 / 48,
        rel_tol=1e-3,
        why=say("the mask hides the T(T − 1)/2 entries above the diagonal: with T = 24, 276 of 576, that is 0.479; "
                "just under half, since the diagonal stays",
                "掩码遮住对角线上方的 T(T − 1)/2 个元素：T = 24 时是 576 个中的 276 个，即 0.479；对角线保留，所以略少于一半"),
        hint=say("a query may see itself and the positions before it; count the entries above the diagonal of a "
                 "T × T matrix, T being the number of tokens printed above",
                 "一个查询能看到它自己和它之前的位置；数一数 T × T 矩阵对角线上方的元素，T 是上面打印出的词元数"),
    ),
    4: Question(
        answer="b",
        why=say("without c_proj, the output is the heads' outputs side by side: the shape is still (B, T, C) and the "
                "weights are the same, but no head's result can reach another head's channels",
                "没有 c_proj，输出就是各个头的输出并排放在一起：形状仍是 (B, T, C)，权重也不变，但任何一个头的结果都到不了"
                "别的头的通道"),
        hint=say("test each option against the code: which shape comes out of merge_heads, are the weights computed "
                 "before or after c_proj, and which numbers can reach one output channel?",
                 "拿代码逐个检验选项：merge_heads 输出什么形状？权重是在 c_proj 之前还是之后算的？哪些数能到达某一个输出通道？"),
    ),
    5: Question(
        answer=3,
        rel_tol=0.0,
        why=say("layer 3, head 4 puts about 0.62 of its attention on the previous token: a previous-token head",
                "第 3 层的头 4 把约 0.62 的注意力放在前一个词元上：这是一个“前一个词元”头"),
        hint=say("`previous` is a (layer, head) table: find its largest entry and read off the row, counting from 0",
                 "`previous` 是一张（层，头）表：找出最大的元素，读出它所在的行，从 0 数起"),
    ),
}

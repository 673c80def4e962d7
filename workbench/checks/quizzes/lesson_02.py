"""Lesson 02 (embeddings and positions): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=49152,
        why=say("one n_embd-vector per position of the context: block_size x n_embd = 256 x 192 = 49,152",
                "上下文中每个位置一个 n_embd 维向量：block_size × n_embd = 256 × 192 = 49,152"),
        hint=say("wpe has one row per position the model can see and one column per dimension; its shape is printed "
                 "in section 3",
                 "wpe 每个模型能看到的位置一行、每个维度一列；它的形状在第 3 节打印过"),
    ),
    2: Question(
        answer=1920,
        why=say("one vector per token all the way through: 10 tokens x n_embd = 10 x 192 = 1,920 numbers, not one "
                "fixed-length vector",
                "自始至终每个词元一个向量：10 个词元 × n_embd = 10 × 192 = 1,920 个数，而不是一个固定长度的向量"),
        hint=say("section 4 printed the hidden states' shape for two texts; how does it grow with the number of "
                 "tokens?",
                 "第 4 节打印了两段文本的隐藏状态形状；它怎样随词元数增长？"),
    ),
    3: Question(
        answer=3,
        why=say("the position is the index along the T axis: idx[1, 3] is at position 3 (of sequence 1), so it gets "
                "wpe[3], whatever its token id",
                "位置就是沿 T 轴的下标：idx[1, 3] 在（第 1 个序列的）位置 3，所以它得到 wpe[3]，与它的词元 id 无关"),
        hint=say("idx is (B, T): which of the two indices of idx[1, 3] is the batch, which the position? Positions "
                 "start at 0",
                 "idx 的形状是 (B, T)：idx[1, 3] 的两个下标哪个是批次、哪个是位置？位置从 0 开始"),
    ),
    4: Question(
        answer="b",
        why=say("a query's output is a weighted sum over the keys it sees; without positions, reordering them "
                "reorders scores and values together, and a sum does not depend on order",
                "查询的输出是它看到的各个键的加权和；没有位置信息时，重新排列它们只是同时重排分数和值，而求和与顺序无关"),
        hint=say("the last position sees all three words in both sentences. Without position vectors, what in the "
                 "attention computation could tell their order apart?",
                 "在两个句子里，最后一个位置都能看到全部三个词。没有位置向量时，注意力的计算中有什么能分辨它们的顺序？"),
    ),
}

"""Lesson 13 (the app): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=0.05**0.5,  # 0.2236
        why=say("√0.05 = 0.224: a weight of 0.05 gets more than a fifth of the darkest colour, not a twentieth, so "
                "weak attention stays visible next to a head's strongest",
                "√0.05 = 0.224：权重 0.05 得到的颜色超过最深颜色的五分之一，而不是二十分之一，"
                "所以较弱的注意力在最强的注意力旁边也看得见"),
        hint=say("the colour is the square root of the weight, on a scale where a weight of 1 is the darkest",
                 "颜色取权重的平方根，刻度上权重 1 是最深的颜色"),
    ),
    2: Question(
        answer=2,
        why=say("entry t is the probability of ids[t + 1]; the first generated token is ids[3], right after the "
                "3 prompt tokens ids[0..2], so it is entry 2 (and the generated tokens are the last 20 entries)",
                "第 t 项是 ids[t + 1] 的概率；第一个生成的词元是 ids[3]，紧跟在 3 个提示词词元 ids[0..2] 之后，"
                "所以是第 2 项（生成的词元对应最后 20 项）"),
        hint=say("entry t of token_probs is the probability of ids[t + 1]; at which index of ids is the first "
                 "generated token? (Indices start at 0.)",
                 "token_probs 的第 t 项是 ids[t + 1] 的概率；第一个生成的词元在 ids 的哪个下标？（下标从 0 开始。）"),
        rel_tol=0.0,
    ),
    3: Question(
        answer=1,
        why=say("after top-k the most likely token holds at least 0.99, already past 0.95; the mass before the "
                "second token is that same 0.99, not below p, so top-p keeps the first token alone",
                "top-k 之后最可能的词元至少占 0.99，已经超过 0.95；第二个词元之前的累计概率就是这 0.99，"
                "不低于 p，所以 top-p 只留下第一个词元"),
        hint=say("top-p keeps a token while the mass before it (in sorted order) is below p: what is the mass before "
                 "the second token?",
                 "top-p 在（排序后）某个词元之前的累计概率低于 p 时保留它：第二个词元之前的累计概率是多少？"),
        rel_tol=0.0,
    ),
    4: Question(
        answer="a",
        why=say("with the same seed the same random numbers are drawn at each step, so where the two texts part, the "
                "heads switched off changed the distribution; the comparison chart scores the original text itself",
                "种子相同，每一步抽到的随机数就相同，所以两段文本在哪里分开，就是关掉的头在那里改变了分布；"
                "对比图给原文本本身打分"),
        hint=say("a sampled text depends on two things, the distributions and the random draws: which one should "
                 "the ablation change?",
                 "采样出的文本取决于两样东西：概率分布和随机抽取。消融应该改变的是哪一样？"),
    ),
}

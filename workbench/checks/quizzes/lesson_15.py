"""Lesson 15 (from a base model to an assistant): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=6,
        why=say("x and y are 12 + 5 = 17 long; the first 11 targets are prompt tokens and are masked, the last 6 are "
                "the 5 answer tokens and the end token",
                "x 和 y 长 12 + 5 = 17；前 11 个目标是提示的词元，被遮住；后 6 个是答案的 5 个词元和结束词元"),
        hint=say("the sequence is prompt + answer + [end]; which of its tokens are targets, and which of those "
                 "belong to the answer? Your sft_targets can count them",
                 "序列是 prompt + answer + [end]；其中哪些词元是目标，这些目标里哪些属于答案？你写的 sft_targets "
                 "可以数给你看"),
        rel_tol=0.0,
    ),
    2: Question(
        answer=6144,
        why=say("A is (r, in) = (8, 192) and B is (out, r) = (576, 8): 1,536 + 4,608 = 6,144 numbers, against "
                "192 x 576 = 110,592 for the full weight (5.6%)",
                "A 是 (r, in) = (8, 192)，B 是 (out, r) = (576, 8)：1,536 + 4,608 = 6,144 个数，"
                "而完整权重有 192 x 576 = 110,592 个（5.6%）"),
        hint=say("a rank-r update of an (out, in) weight keeps two factors, A of shape (r, in) and B of shape (out, r); "
                 "c_attn makes queries, keys and values at once, so out = 3 x 192",
                 "对 (out, in) 权重的秩 r 更新保存两个因子：形状为 (r, in) 的 A 和形状为 (out, r) 的 B；"
                 "c_attn 一次算出查询、键和值，所以 out = 3 x 192"),
        rel_tol=0.0,
    ),
    3: Question(
        answer=0,
        why=say("merging folds (alpha / r) B A into W: the merged model has exactly the base model's weights, same "
                "shapes, same count, and runs as fast",
                "合并把 (alpha / r) B A 加进 W：合并后的模型与基础模型的权重形状、数量完全相同，运行也一样快"),
        hint=say("what does merge() return for each adapted layer, and how many numbers does it hold?",
                 "merge() 为每个被适配的层返回的是什么？它有多少个数？"),
        rel_tol=0.0,
    ),
    4: Question(
        answer="b",
        why=say("the fine-tuned model answers in the right form (a name, then the end token) but with names it "
                "knows from other plays: SFT taught it the form of an answer, not how to find a new cast's names in "
                "the question, and training on answers it could not work out taught it to answer anyway",
                "微调后的模型回答的形式是对的（一个名字，然后是结束词元），用的却是它从别的剧里知道的名字："
                "SFT 教会了它回答的形式，没教会它从问题里找出新剧中人物的名字；而拿它推不出来的答案来训练，"
                "教会它的是照样作答"),
        hint=say("look at what the SFT model answers on the held-out plays, and whether those names appear in the "
                 "question at all; a wrong mask would have shown in check_sft_targets",
                 "看看 SFT 后的模型在留出的剧上答了什么，这些名字是否出现在问题里；遮罩错了的话 "
                 "check_sft_targets 早就会指出"),
    ),
}

"""Lesson 12 (using a GPT: prompting, fine-tuning, filtering, what goes in): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=2,
        rel_tol=0.0,
        why=say("[7] bans token 7 whatever came before; [3, 9] bans token 9 because the context ends with 3: two "
                "entries become -inf",
                "[7] 无论前文是什么都禁止词元 7；[3, 9] 禁止词元 9，因为上下文以 3 结尾：两个位置变成 -inf"),
        hint=say("a sequence of one token is banned always; a longer one bans only its last token, and only when the "
                 "context ends with the tokens before it. Go through the two sequences one by one",
                 "只有一个词元的序列总是被禁止；更长的序列只禁止它的最后一个词元，而且只在上下文以它前面的那些词元结尾时"
                 "才禁止。把两个序列逐个看一遍"),
    ),
    2: Question(
        answer=123,
        rel_tol=0.0,
        why=say("Romeo and Juliet has the most training lines, and 123 of the 400 held-out lines (30.8%) come from it: "
                "always answering it gets those right, which is the number a classifier must beat",
                "《罗密欧与朱丽叶》的训练台词最多，400 条留出台词里有 123 条（30.8%）出自它：总是回答这部剧就能答对"
                "这些，分类器必须超过这个数"),
        hint=say("find the play with the most training lines (`majority`), then count the held-out lines whose label "
                 "is that play; a count of lines, not a fraction",
                 "先找出训练台词最多的那部剧（`majority`），再数留出台词中标签是这部剧的有多少条；答条数，不是比例"),
    ),
    3: Question(
        answer="b",
        why=say("'TL;DR' occurs 0 times in its training text: to the model the letters are an odd moment in a play, "
                "and the likeliest continuation is more play. The prompt fits in its window, and the tokenizer "
                "encodes it, as six one-character tokens",
                "训练文本中 'TL;DR' 出现 0 次：对模型来说，这几个字母只是剧本里一处古怪的地方，最可能的续写仍是剧本。"
                "提示词装得进上下文窗口，分词器也能编码它（6 个单字符词元）"),
        hint=say("look at what the summarization cell printed: how many tokens is the prompt, how was 'TL;DR:' "
                 "tokenized, and how often does the training text contain it?",
                 "看看摘要那个单元格打印了什么：提示词有多少个词元？'TL;DR:' 被切成了什么？训练文本里它出现过几次？"),
    ),
    4: Question(
        answer=1411,
        rel_tol=0.0,
        why=say("1,411 tokens for 1,024 bytes: read as characters, each byte above 127 becomes two bytes of UTF-8, "
                "and the tokenizer's merges, learned on plays, rarely apply to them",
                "1,024 个字节得到 1,411 个词元：按字符读时，每个大于 127 的字节变成两个 UTF-8 字节，而分词器从剧本中"
                "学到的合并规则很少适用于它们"),
        hint=say("encode png[:1024].decode('latin-1') with the shipped tokenizer and count the ids (section 4 does "
                 "it); it is more than the number of bytes",
                 "用课程自带的分词器编码 png[:1024].decode('latin-1')，数一数得到的 id（第 4 节就是这样做的）；结果比"
                 "字节数多"),
    ),
    5: Question(
        answer="b",
        why=say("left padding shifts every real token to a later position, which changes its position embedding, and "
                "the padding now comes before the real tokens, where the causal mask lets them see it",
                "左填充会把每个真实词元移到更靠后的位置，从而改变它的位置嵌入；而且填充现在位于真实词元之前，因果掩码"
                "允许它们看到填充"),
        hint=say("the causal mask hides what comes after a token, not what comes before it; and where does each real "
                 "token sit once padding is put in front of it?",
                 "因果掩码遮住的是一个词元之后的内容，而不是之前的；在前面加了填充以后，每个真实词元处在哪个位置？"),
    ),
}

"""Lesson 01 (tokens): the quiz's answer key."""

from workbench.checks.core import say
from workbench.checks.quiz import Question

QUESTIONS = {
    1: Question(
        answer=16,
        why=say("each of the four Chinese characters takes 3 UTF-8 bytes and the emoji 4: 4 x 3 + 4 = 16",
                "四个汉字各占 3 个 UTF-8 字节，emoji 占 4 个：4 × 3 + 4 = 16"),
        hint=say("count bytes, not characters: len(...) of the string's .encode(\"utf-8\"). How many bytes does a "
                 "Chinese character take, and how many most emoji?",
                 "数的是字节，不是字符：对字符串的 .encode(\"utf-8\") 取 len(...)。一个汉字占几个字节？大多数 emoji 呢？"),
    ),
    2: Question(
        answer=3,
        why=say("left to right: a a -> new, a a -> new, and the fifth a has no partner: [256, 256, 97]",
                "从左到右：a a -> 新 id，a a -> 新 id，第五个 a 没有配对：[256, 256, 97]"),
        hint=say("merge scans left to right and, after a merge, continues after both ids; pairs never overlap. Run "
                 "your merge on the list, or do it by hand",
                 "merge 从左到右扫描，合并之后从这两个 id 之后继续，合并的对不会重叠。用你的 merge 跑一下，或者手算"),
    ),
    3: Question(
        answer=2,
        why=say("counting looks at every adjacent position, so a a a holds (a, a) twice; only merging skips overlaps",
                "计数会看每一个相邻位置，所以 a a a 里有两个 (a, a)；只有合并时才跳过重叠的对"),
        hint=say("list the adjacent pairs of a a a b one by one, positions (0, 1), (1, 2), (2, 3); counting does not "
                 "skip overlaps the way merging does",
                 "把 a a a b 的相邻对逐个列出来：位置 (0, 1)、(1, 2)、(2, 3)；计数不会像合并那样跳过重叠"),
    ),
    4: Question(
        answer=1743,
        why=say("2,000 tokens = 256 bytes + 1 special token (<|endoftext|>) + 1,743 merges, one new token per merge",
                "2,000 个词元 = 256 个字节 + 1 个特殊词元（<|endoftext|>）+ 1,743 次合并，每次合并产生一个新词元"),
        hint=say("the vocabulary starts with all 256 bytes and one special token before the first merge; each merge "
                 "adds one token",
                 "在第一次合并之前，词表里已经有全部 256 个字节和一个特殊词元；每次合并增加一个词元"),
    ),
    5: Question(
        answer="b",
        why=say("every byte is in a byte-level vocabulary, so the character always encodes; it takes one token per "
                "byte because no merge joining its three bytes was learned from Shakespeare",
                "字节级词表包含所有字节，所以 我 总能编码；它之所以一个字节一个词元，是因为从莎士比亚里学不到把它的字节拼起来的合并"),
        hint=say("a byte-level BPE starts from all 256 bytes, and it never fails on unknown characters. What makes a "
                 "sequence of bytes one token?",
                 "字节级 BPE 从全部 256 个字节出发，遇到未知字符也不会失败。什么能让一串字节变成一个词元？"),
    ),
}

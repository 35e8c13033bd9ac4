"""Second layer of the prompt guard: regular expressions for known injection and
jailbreak phrasings. Cheap, explainable, and blind to paraphrase: the classifier
covers what they miss. Each pattern was checked against the benign prompts in
``benign_prompts.json`` and ``benign_roleplay.jsonl`` (see docs/llm-safety.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

INJECTION = "prompt_injection"
JAILBREAK = "jailbreak"
EXTRACTION = "system_prompt_extraction"

_GAP = r"[^.\n]{0,40}?"  # a short stretch of words within one sentence


@dataclass(frozen=True)
class Rule:
    """A named pattern and the category it signals."""

    name: str
    category: str
    pattern: re.Pattern[str]


@dataclass(frozen=True)
class RuleMatch:
    """Where a rule matched in the checked text."""

    rule: str
    category: str
    start: int
    end: int
    text: str


def _rule(name: str, category: str, pattern: str, *, case: bool = False) -> Rule:
    flags = 0 if case else re.IGNORECASE
    return Rule(name, category, re.compile(pattern, flags | re.DOTALL))


RULES: tuple[Rule, ...] = (
    _rule(
        "ignore_previous_instructions",
        INJECTION,
        rf"\b(ignore|disregard|forget|override|bypass|skip)\b{_GAP}\b(previous|prior|above|"
        rf"earlier|preceding|all|any|your|the|these|those|initial|original)\b{_GAP}"
        r"\b(instructions?|prompts?|rules|directives|guidelines|directions|programming)\b",
    ),
    _rule(
        "chat_template_tokens",
        INJECTION,
        r"<\|im_start\|>|<\|im_end\|>|<\|system\|>|<<SYS>>|\[/?INST\]|<\|endoftext\|>|"
        r"<\|eot_id\|>|<\|start_header_id\|>",
    ),
    _rule("do_anything_now", JAILBREAK, r"\bdo anything now\b|\bDAN\b(?= mode|,| can| is| has)"),
    _rule(
        "privileged_mode",
        JAILBREAK,
        r"\bdeveloper mode (enabled|activated|output)\b|\b(god|jailbreak|jailbroken|"
        r"unrestricted|unfiltered|uncensored|evil|chaos)\s?mode\b",
    ),
    _rule(
        "no_longer_bound",
        JAILBREAK,
        r"\b(you are|you're|you have been|you've been|you will be|are now)\s+(now\s+)?"
        r"(no longer|not|free from|freed from|released from)\s+(bound|restricted|limited|"
        r"constrained|required to (follow|obey|comply)|the typical confines)\b",
    ),
    _rule(
        "no_ethics_or_policy",
        JAILBREAK,
        rf"\b(no|without|free of|ignore|ignores|ignoring|bypass|violat\w*|break\w*|"
        rf"beyond)\b{_GAP}\b(ethic\w*|moral\w*|content|openai|safety|censorship)\s+"
        r"(guidelines?|restrictions?|filters?|policy|policies|boundaries|limits|principles)\b",
    ),
    _rule(
        "unfiltered_persona",
        JAILBREAK,
        rf"\b(unfiltered|uncensored|amoral|unethical|unrestricted|immoral)\b{_GAP}"
        r"\b(ai|chatbot|assistant|model|character|persona|version|language model|bot)\b",
    ),
    _rule(
        "refusal_suppression",
        JAILBREAK,
        r"\b(never|do not|don't|must not|will not|won't|cannot|can't)\s+(ever\s+)?"
        r"(refuse|decline|say (that )?(you|it) (can(no|')t|cannot)|"
        r"(include|add) (any )?(warnings?|disclaimers?))\b",
    ),
    _rule(
        "system_prompt_extraction",
        EXTRACTION,
        rf"\b(reveal|show|print|repeat|output|display|tell me|give me|leak|dump|write out|"
        rf"what (is|are|was|were))\b{_GAP}\b(your|the)\s+(system|initial|original|hidden|"
        r"secret|developer)\s+(prompt|instructions?|message|rules|configuration)\b",
    ),
    _rule(
        "repeat_text_above",
        EXTRACTION,
        r"\b(repeat|print|output|copy)\b[^.\n]{0,30}\b(words|text|everything|all)\s+"
        r"(above|before this|prior to this)\b",
    ),
)


def match_rules(text: str, rules: tuple[Rule, ...] = RULES) -> list[RuleMatch]:
    """Every rule that matches ``text`` (first match per rule), in rule order."""
    found: list[RuleMatch] = []
    for rule in rules:
        hit = rule.pattern.search(text)
        if hit is not None:
            found.append(RuleMatch(rule.name, rule.category, hit.start(), hit.end(), hit.group(0)))
    return found

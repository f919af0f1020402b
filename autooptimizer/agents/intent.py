"""The operator's intent, read from the operator's own words only: data never grants capabilities.

A goal can carry material that is not the operator speaking: a quoted document, a pasted log, text after
"document:", a `<doc>` block, a code fence. That material is DATA: it never picks the agent, the job or the tools,
and an instruction inside it is not followed (it is listed in `Intent.ignored`). From the operator's own words
(`split_goal(goal).operator`) `classify` decides:

- `refused`: the words try to override the instructions or the policies (forged SYSTEM/ASSISTANT turns or role
  tags, "ignore previous instructions", "policy disabled", "approved=true", "you are now ..."): nothing runs;
- `question`: they ask to explain / show / check / list, and ask for no change: only `read` tools may run;
- `action`: the tools of the playbook jobs (playbooks.yaml) the offline router and the operator's words pick.

`Intent.scope` goes with every registry call of the run (`ToolRegistry.call(scope=...)`); the registry computes
the `in_scope` fact from it and the PDP denies change/critical tools outside it (`shared.intent-scope`), whatever
the model (offline planner or a real LLM that obeys injected text) asks for.

Matching runs on `normalize`d text (NFKC, zero-width and other format characters dropped, common Cyrillic/Greek
look-alikes mapped to Latin, whitespace runs collapsed), case-insensitively.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Any, Literal

from pydantic import BaseModel, Field

IntentKind = Literal["action", "question", "refused"]

# Cyrillic and Greek letters that look like Latin ones (the common confusables used to dodge keyword filters).
_HOMOGLYPHS = str.maketrans("аеорсухіјѕԁӏАВЕКМНОРСТХІЈЅαοτνκυΑΒΕΗΙΚΜΝΟΡΤΧΥΖ",
                            "aeopcyxijsdlABEKMHOPCTXIJSaotvkuABEHIKMNOPTXYZ")
_SPACES = re.compile(r"[^\S\n]+")
_NEWLINES = re.compile(r"\s*\n\s*")


def normalize(text: str) -> str:
    """The text as the classifier reads it: NFKC, no format characters (zero-width space/joiners, BOM, soft
    hyphen, bidi marks), look-alike letters mapped to Latin, each whitespace run one space (newlines kept)."""
    text = unicodedata.normalize("NFKC", text or "").replace("\r\n", "\n").replace("\r", "\n")
    text = "".join(ch for ch in text if unicodedata.category(ch) != "Cf").translate(_HOMOGLYPHS)
    return _NEWLINES.sub("\n", _SPACES.sub(" ", text)).strip()


# --- the operator's words vs embedded material --------------------------------------------------------------------
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
# role tags stay in the operator's text (they are what the override check looks for), so they are never "data"
_ROLE_TAG_NAMES = r"system|assistant|user|developer|human|ai|tool|function|instructions?|inst|sys|im_start|im_end"
_PAIRED_TAG = re.compile(rf"<(?!/|(?:{_ROLE_TAG_NAMES})\b)([a-z][\w:-]*)\b[^<>]*>.*?</\1\s*>", re.S | re.I)
_DATA_TAGS = (r"doc|document|documents|context|data|text|content|file|page|email|mail|input|output|quote|source|"
              r"article|snippet|excerpt|log|logs|result|results|tool_result|tool_output|observation|passage|ticket")
_OPEN_DATA_TAG = re.compile(rf"<(?:{_DATA_TAGS})\b[^<>]*>.*\Z", re.S | re.I)
_QUOTE_PAIRS = (("\u201c", "\u201d"), ("\u2018", "\u2019"), ("\u00ab", "\u00bb"), ("\u201e", "\u201c"),
                ("\u201a", "\u2018"), ("\u2039", "\u203a"), ("\u300c", "\u300d"), ('"', '"'), ("`", "`"))
# a straight single quote opens where it does not follow a letter (not an apostrophe: don't, model's) and closes
# where no letter follows it (the users' queries closes; don't does not)
_SINGLE = re.compile(r"(?<![\w'])'(.*?)(?:'(?![\w])|\Z)", re.S)
_DATA_MARKER = re.compile(
    r"\b(?:document|doc|documents|text|passage|paragraph|content|contents|snippet|excerpt|quote|page|article|"
    r"email|e-mail|message|ticket|comment|review|log|logs|output|result|results|response|reply|observation|"
    r"transcript|the\s+following|this|these|below|says|said|reads|read|states|contains|wrote|writes)\s*:", re.I)
# a colon right before an opening quote, fence or tag: what follows is a pasted thing, whatever the word before it
_COLON_QUOTE = re.compile(r":\s*(?=[\"'`<\u201c\u2018\u00ab\u201e\u201a\u2039\u300c])")
_PLACEHOLDER = " \u2026 "  # where embedded material was cut out


class Split(BaseModel):
    """A goal separated into the operator's words and the material embedded in it."""

    operator: str  # the operator's own words, every embedded piece cut out: what routing and intent read
    values: str  # the operator's words with one-word quoted values kept ('ltr-8eef9ab271'): what arguments read
    embedded: list[str] = Field(default_factory=list)

    @property
    def route_text(self) -> str:
        """The operator's words without the cut marks: what the router reads."""
        return _SPACES.sub(" ", self.operator.replace(_PLACEHOLDER.strip(), " ")).strip()


def _cut_quotes(text: str, embedded: list[str], keep_words: bool) -> str:
    """Cut quoted spans (a quote left open runs to the end: fail-safe, it is data). With keep_words, a quoted
    single token stays, unquoted, as a value."""
    def repl(m: re.Match) -> str:
        inner = m.group(1)
        if keep_words and inner.strip() and not re.search(r"\s", inner.strip()):
            return f" {inner.strip()} "
        embedded.append(inner)
        return _PLACEHOLDER

    for open_, close in _QUOTE_PAIRS:
        text = re.sub(rf"{re.escape(open_)}(.*?)(?:{re.escape(close)}|\Z)", repl, text, flags=re.S)
    return _SINGLE.sub(repl, text)


def _split(text: str, keep_words: bool) -> tuple[str, list[str]]:
    embedded: list[str] = []

    def cut(m: re.Match) -> str:
        embedded.append(m.group(0))
        return _PLACEHOLDER

    text = _FENCE.sub(cut, text)
    text = _PAIRED_TAG.sub(cut, text)
    text = _OPEN_DATA_TAG.sub(cut, text)
    for rx in (_DATA_MARKER, _COLON_QUOTE):  # everything after a marker is the pasted material
        if m := rx.search(text):
            embedded.append(text[m.end():])
            text = text[:m.end()]
    text = _cut_quotes(text, embedded, keep_words)
    return _SPACES.sub(" ", text).strip(), [e for e in embedded if e.strip()]


def split_goal(goal: str) -> Split:
    """The operator's words and the embedded material of `goal` (normalized first)."""
    text = normalize(goal)
    operator, embedded = _split(text, keep_words=False)
    values, _ = _split(text, keep_words=True)
    return Split(operator=operator, values=values, embedded=embedded)


# --- attempts to override instructions or policy --------------------------------------------------------------------
_W = r"(?:\W+\w+){0,4}?\W+"  # up to four words in between
_GUARDS = (r"instructions?|rules|prompts?|guardrails?|directives?|guidelines?|polic(?:y|ies)|constraints|"
           r"safety|safeguards?|restrictions?|programming|system\s+message")
_CONTROLS = (r"polic(?:y|ies)|pdp|cedar|guardrails?|safety(?:\s+checks?)?|kill[\s_-]?switch|approvals?|"
             r"approval\s+(?:gates?|checks?|process)|audit(?:\s+log)?|restrictions?|permissions?|scope")
_ROLE = r"system|assistant|user|developer|human|ai"
OVERRIDE_CUES: tuple[tuple[str, re.Pattern], ...] = tuple((label, re.compile(rx, re.I | re.M)) for label, rx in (
    ("asks to ignore the instructions", rf"\b(?:ignore|disregard|forget|neglect|abandon)\b{_W}(?:{_GUARDS})\b"),
    ("asks to bypass or switch off a control",
     rf"\b(?:bypass|circumvent|override|overrule|disable|deactivate|suspend|lift|evade|get\s+around|"
     rf"turn\s+off|switch\s+off|skip)\b{_W}(?:{_CONTROLS})\b"),
    ("claims a control is off",
     rf"\b(?:{_CONTROLS})\b\s+(?:(?:is|are|has|have|was|were|been|got|now|temporarily|currently|hereby)\s+)*"
     r"(?:disabled|off|turned\s+off|switched\s+off|suspended|lifted|bypassed|removed|waived|deactivated|overridden|"
     r"not\s+(?:required|needed|enforced|active)|no\s+longer\s+(?:apply|applies|required|needed|enforced))\b"),
    ("forges a role turn", rf"(?:^|[.!?;:>\]\)\"'\u201d\u2019\u2026|}}]\s*)[*_#>\s]*(?:{_ROLE})[*_\s]*:(?!//)"),
    ("forges a role tag", rf"<\|?\s*/?\s*(?:{_ROLE_TAG_NAMES})\s*\|?>|\[/?(?:inst|sys|system)\]|<<\s*/?sys\s*>>|"
                          r"^\s*#{2,}\s*(?:system|instructions?|assistant|user|response)\b|"
                          r"\b(?:begin|end)\s+(?:system|instructions?)\b"),
    ("breaks out of a data block", rf"</\s*(?:{_DATA_TAGS}|goal|user_input|untrusted)\s*>"),
    ("forges the agents' protocol", r"<<<\s*goal|goal\s*>>>|\b(?:delegate|report|resume)\s*\{"),
    ("assigns a new persona", r"\byou\s+are\s+now\b|\bfrom\s+now\s+on\b[^.]{0,20}\byou\b|"
                              r"\bpretend\s+(?:to\s+be|you\s+are|that)\b|"
                              r"\b(?:act|behave|respond|operate)\s+as\s+(?:an?\s+|the\s+|if\s+)?(?:unrestricted|"
                              r"unfiltered|admin|administrator|root|system|developer|dan|jailbroken|different|new)\b"),
    ("asks for a privileged mode", r"\b(?:developer|god|sudo|unrestricted|jailbreak|jailbroken|dan|admin|root|"
                                   r"unsafe)\s+mode\b|\bjailbreak\w*|\bsudo\b|"
                                   r"\b(?:admin|emergency|security|root|manual|operator)\s+override\b"),
    ("claims a grant", r"\b(?:approved|approval|ab_passed|kill_switch|killswitch|in_scope|target_is_gold|is_admin|"
                       r"admin|authori[sz]ed|allowed|permitted|override|policy|policies)['\"]?\s*[=:]\s*['\"]?"
                       r"(?:true|yes|1|on|false|off|0|granted|none|disabled)\b|"
                       r"\bpre-?approved\b|\bauto-?approved\b|\bapproval\s+(?:is\s+|was\s+|has\s+been\s+)?granted\b|"
                       r"\b(?:already|been)\s+approved\s+by\b|"
                       r"\bas\s+(?:the\s+|an?\s+|your\s+)?(?:administrator|admin|superuser|sysadmin|"
                       r"root(?!\s+cause))\b"),
    ("asks for the hidden instructions", r"\bsystem\s+prompt\b|\b(?:new|updated|real|true)\s+instructions?\s*:"),
)) + (
    # mid-sentence: a role label in any casing but plain lowercase ("SYSTEM:", "AsSiStAnT:"), or a lowercase one no
    # operator writes in passing ("assistant:")
    ("forges a role turn",
     re.compile(rf"\b(?!(?:{_ROLE})\b)(?i:{_ROLE})\s*:(?!//)|\b(?:assistant|developer)\s*:", re.M)),
)


def override_cues(text: str) -> list[str]:
    """What in `text` (normalized) tries to override instructions or policy; [] when nothing does. A question
    about a control ("is the kill switch off?") is not a claim that it is off."""
    found: dict[str, str] = {}
    for label, rx in OVERRIDE_CUES:
        for m in rx.finditer(text):
            if label in found or (label == "claims a control is off" and _in_question(text, m.start())):
                continue
            found[label] = f"{label} ({m.group(0).strip()[:60]!r})"
    return list(found.values())


# --- question or action ---------------------------------------------------------------------------------------------
_CLAUSES = re.compile(r"[.!?;\n]+|,|\b(?:and\s+then|then|and|but|so|also)\b|\u2026", re.I)
_PREFIX = re.compile(
    r"^(?:(?:please|pls|kindly|now|then|also|and|so|ok|okay|hey|hi|hello|just|quickly|first|next|finally|"
    r"go\s+ahead\s+and|i\s+(?:want|need|would\s+like|'d\s+like)\s+(?:you\s+)?to|can\s+you|could\s+you|would\s+you|"
    r"will\s+you|can\s+we|could\s+we|shall\s+we|you\s+(?:should|must|need\s+to)|we\s+(?:should|must|need\s+to|have\s+to)|let's|let\s+us|"
    r"make\s+sure\s+to|try\s+to|help\s+me)\b[\s,]*)+", re.I)
QUESTION_WORDS = frozenset((
    "explain", "why", "what", "what's", "whats", "which", "who", "whom", "whose", "when", "where", "how", "how's",
    "show", "list", "check", "tell", "describe", "display", "summarize", "summarise", "is", "are", "was", "were",
    "does", "do", "did", "has", "have", "had", "should", "would", "could", "can", "will", "inspect", "investigate",
    "diagnose", "analyze", "analyse", "look", "view", "print", "read", "query", "see", "monitor", "verify",
    "review", "audit", "report", "status", "explanation"))
ACTION_WORDS = frozenset((
    "fix", "repair", "remediate", "recover", "restore", "resolve", "heal", "retrain", "re-train", "train",
    "fine-tune", "finetune", "kick", "start", "launch", "run", "deploy", "release", "canary", "canary-release",
    "ship", "roll", "rollback", "revert", "undo", "promote", "make", "delete", "remove", "drop", "purge", "set",
    "point", "move", "alias", "register", "put", "publish", "scale", "increase", "decrease", "add", "bump",
    "switch", "use", "route", "shift", "send", "build", "assemble", "create", "generate", "regenerate", "prepare",
    "augment", "expand", "produce", "apply", "change", "update", "upgrade", "downgrade", "enable", "disable",
    "turn", "bring", "get", "replace", "swap", "rebuild", "rerun", "re-run", "retry", "compute", "estimate",
    "evaluate", "compare"))


# "do" leads questions ("do the gates pass?") but also open requests for a change ("do whatever brings it down")
_DO_ACTION = re.compile(r"do\s+(?:whatever|something|anything|what(?:ever)?\s+(?:it\s+takes|is\s+needed)|"
                        r"the\s+needful)\b", re.I)


def _clauses(text: str) -> list[str]:
    return [c.strip() for c in _CLAUSES.split(text) if c and c.strip()]


def _lead(clause: str) -> str:
    words = _PREFIX.sub("", clause.strip()).split()
    return words[0].lower().strip("*_\"'`()[]:") if words else ""


def _in_question(text: str, pos: int) -> bool:
    """Is position `pos` inside a sentence that asks (ends with '?' or starts with a question word)?"""
    start = max(text.rfind(p, 0, pos) for p in ".!?\n") + 1
    ends = [i for i in (text.find(p, pos) for p in ".!?\n") if i >= 0]
    end = min(ends) if ends else len(text)
    return (end < len(text) and text[end] == "?") or _lead(text[start:end]) in QUESTION_WORDS


def asks_only(operator: str) -> bool:
    """True when the operator's words ask a question (explain, show, check, list, why, what, ...) and ask for no
    change: such a goal may run read tools only. A clause led by a change verb ("... and fix it") makes it an
    action; so does a plain statement ("NDCG dropped"), whose plan the playbooks bound."""
    clauses = _clauses(operator)
    if any(_lead(c) in ACTION_WORDS or _DO_ACTION.match(_PREFIX.sub("", c)) for c in clauses):
        return False
    return operator.rstrip().endswith("?") or any(_lead(c) in QUESTION_WORDS for c in clauses)


# --- tools named in text (for the record of what embedded material asked for) ------------------------------------
TOOL_PHRASES: dict[str, str] = {
    "delete_model": r"\b(?:delete|remove|drop|purge|wipe|destroy)\b[^.\n]{0,40}?\b(?:model|version|gold|champion)",
    "set_model_alias": r"\bset\b[^.\n]{0,30}?\b(?:champion|challenger|gold|alias)\b|\b(?:re-?)?alias\b|"
                       r"\bpoint\b[^.\n]{0,20}?\b(?:champion|challenger|gold)\b",
    "promote_model": r"\bpromot\w*\b|\bproduction\s+model\b",
    "rollback_deployment": r"\broll\s*(?:it\s+)?back\b|\brollback\b|\brevert\b",
    "deploy_canary": r"\bcanary\b|\bdeploy(?:s|ed|ing)?\b",
    "start_ab_test": r"\ba/?b[\s-]?test\w*\b|\bexperiment\b",
    "train_reranker": r"\b(?:re-?)?train(?:ing)?\b|\bfine-?tune\b",
    "register_model": r"\bregist(?:er|ry)\b",
    "scale_service": r"\bscale\b|\breplicas?\b",
    "switch_variant": r"\bswitch\b[^.\n]{0,30}?\bvariant\b|\brerank[\s_-]?depth\b",
    "build_dataset": r"\bbuild\b[^.\n]{0,20}?\b(?:data\s*set|dataset|training\s+data)\b",
    "augment_dataset": r"\baugment\w*\b",
}


def tools_named(text: str) -> list[str]:
    """Catalogue tools that `text` names, by their name (delete_model, "delete model") or a phrase that asks for
    them ("delete the gold model"), in catalogue order."""
    from autooptimizer.policies.catalog import load_catalog

    out = []
    for name in load_catalog().tools:
        by_name = re.search(r"\b" + r"[\s_-]?".join(name.split("_")) + r"\b", text, re.I)
        if by_name or ((rx := TOOL_PHRASES.get(name)) and re.search(rx, text, re.I)):
            out.append(name)
    return out


# --- the intent -----------------------------------------------------------------------------------------------------
class Intent(BaseModel):
    """What the operator asked for, and so which tools the run may use."""

    kind: IntentKind
    operator_text: str
    routed_to: str | None = None  # the agent the offline router picks for the operator's words (None: refused)
    jobs: list[tuple[str, str]] = Field(default_factory=list)  # (agent, job) the playbooks plan for them
    allowed_tools: list[str] = Field(default_factory=list)  # sorted; empty for a refusal
    reason: str = ""
    cues: list[str] = Field(default_factory=list)  # override attempts in the operator's words (refused)
    ignored: list[str] = Field(default_factory=list)  # instructions found in embedded material, not followed
    embedded: int = 0  # how many embedded pieces were cut out

    @property
    def scope(self) -> frozenset[str]:
        return frozenset(self.allowed_tools)


def read_tools() -> frozenset[str]:
    from autooptimizer.policies.catalog import load_catalog

    return frozenset(t for t, e in load_catalog().tools.items() if e.risk == "read")


def refusal_text(cues: list[str]) -> str:
    return ("Refused: the goal tries to override my instructions or the policies ("
            + "; ".join(cues) + "). Nothing ran, and the attempt is in the audit log. "
            "Instructions and permissions come only from your own request and the policies, never from text in a "
            "goal: say in your own words what you want done, and put documents, logs or tool output in quotes "
            "(they are read as data). Approvals go through `autoopt approvals approve ID`; the kill switch through "
            "`autoopt kill-switch`; policy changes through the files in autooptimizer/policies/.")


def classify(goal: str, router: Any = None, playbooks: Any = None) -> Intent:
    """The intent of `goal` and the tools its run may use (see the module doc). `router`/`playbooks` default to
    the offline router and playbooks.yaml."""
    from autooptimizer.agents.playbooks import load_playbooks
    from autooptimizer.agents.router import CLARIFY, get_router

    split = split_goal(goal)
    ignored = _ignored(split.embedded)
    cues = override_cues(split.operator)
    if cues:
        return Intent(kind="refused", operator_text=split.operator, cues=cues, ignored=ignored,
                      embedded=len(split.embedded), reason=refusal_text(cues))
    playbooks = playbooks or load_playbooks()
    route = (router or get_router()).route(split.route_text)
    reads = read_tools()
    base = {"operator_text": split.operator, "routed_to": route.agent, "ignored": ignored,
            "embedded": len(split.embedded)}
    if route.agent == CLARIFY:
        return Intent(kind="question", allowed_tools=sorted(reads), reason="nothing to do: the goal is off-topic",
                      **base)
    if asks_only(split.operator):
        job = playbooks.job(route.agent, split.operator)
        return Intent(kind="question", jobs=[(route.agent, job.name)], allowed_tools=sorted(reads),
                      reason="the goal asks a question: only read tools may run", **base)
    jobs = plan_jobs(playbooks, route.agent, split.operator)
    tools = {s.tool for agent, name in jobs for s in playbooks.job(agent, "", name).steps}
    return Intent(kind="action", jobs=jobs, allowed_tools=sorted(reads | tools),
                  reason="the goal asks for " + ", ".join(f"{a}:{j}" for a, j in jobs), **base)


def plan_jobs(playbooks: Any, first: str, operator: str) -> list[tuple[str, str]]:
    """(agent, job) pairs the offline planner runs for the operator's words: the routed agent's job picked from
    them, then the rest of the remediation chain (named or default jobs)."""
    out = []
    for i, (agent, name) in enumerate(playbooks.plan(first, operator)):
        job = (playbooks.job(agent, operator) if i == 0 else
               playbooks.job(agent, "", name) if name else playbooks.default_job(agent))
        out.append((agent, job.name))
    return out


def _ignored(embedded: list[str]) -> list[str]:
    """Instructions in the embedded material: override attempts and tools it asks for (not followed)."""
    out: list[str] = []
    for piece in embedded:
        text = normalize(piece)
        out += [c for c in override_cues(text) if c not in out]
        out += [t for t in tools_named(text) if t not in out]
    return out


def goal_digest(goal: str) -> dict:
    """What the audit log keeps of a goal: its sha256 and a short, normalized summary."""
    text = normalize(goal)
    return {"goal_sha256": hashlib.sha256((goal or "").encode()).hexdigest(),
            "goal_summary": text[:200] + ("\u2026" if len(text) > 200 else ""), "goal_chars": len(goal or "")}


def audit_intent(intent: Intent, goal: str, env: str, *, kind: str, run_id: str | None = None,
                 trace_id: str | None = None) -> dict:
    """One audit record for a refused goal (kind "refusal") or a goal whose embedded material held instructions
    that were not followed (kind "quarantine"). Raises AuditError/OSError if the log cannot be written."""
    from autooptimizer.policies.audit import AuditLog

    return AuditLog().append({
        "kind": kind, "actor": "operator", "agent": "supervisor", "tool": None, "env": env,
        "decision": "refused" if kind == "refusal" else "read_as_data", "executed": False,
        "intent": intent.kind, "reason": intent.reason if kind == "refusal" else
        "instructions inside embedded material were treated as data and not followed",
        "cues": intent.cues, "ignored": intent.ignored, "allowed_tools": intent.allowed_tools,
        "run_id": run_id, "trace_id": trace_id, "cycle_id": None, **goal_digest(goal)})

"""sBLIMP-style minimal pairs generated from templates over a small English vocabulary.

BLiMP (Warstadt et al. 2020) builds each of its 67 paradigms from a template and a
vocabulary annotated with the features the paradigm needs (number, gender, transitivity,
irregular forms), so that the two sentences of a pair differ in one place and only one is
grammatical. This module does the same at a smaller scale, for the built-in sBLIMP-style
benchmark: the vocabulary and templates below were written for this project, and the
pairs are generated at run time (never stored), deterministic under a seed.

Every paradigm keeps the two sentences of a pair the same number of words, so a
likelihood model cannot win by preferring the shorter one. Phenomena covered:
subject-verb agreement (simple, plural, across a prepositional phrase), subject-auxiliary
agreement, determiner-noun agreement, anaphor gender and number agreement, argument
structure (transitive and intransitive verbs), irregular past participles, island-free
wh-questions (wh vs that, with and without a gap), existential *there* with quantifiers,
and negative polarity *ever*.

Output rows have BLiMP's fields (``sentence_good``, ``sentence_bad``, ``UID``, ``field``,
``linguistics_term``), so :func:`twist.bench.blimp.read_blimp_jsonl` reads them unchanged.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path

from twist.atomic import atomic_write_text

# --- vocabulary (written for this project) ----------------------------------------------
# people: (singular, plural, gender) with gender "m", "f" or "" (either)
PEOPLE = [
    ("man", "men", "m"), ("woman", "women", "f"), ("boy", "boys", "m"), ("girl", "girls", "f"),
    ("king", "kings", "m"), ("queen", "queens", "f"), ("father", "fathers", "m"), ("mother", "mothers", "f"),
    ("brother", "brothers", "m"), ("sister", "sisters", "f"), ("uncle", "uncles", "m"), ("aunt", "aunts", "f"),
    ("prince", "princes", "m"), ("princess", "princesses", "f"), ("waiter", "waiters", "m"),
    ("waitress", "waitresses", "f"), ("teacher", "teachers", ""), ("doctor", "doctors", ""),
    ("student", "students", ""), ("farmer", "farmers", ""), ("driver", "drivers", ""), ("child", "children", ""),
    ("baker", "bakers", ""), ("singer", "singers", ""), ("nurse", "nurses", ""), ("pilot", "pilots", ""),
    ("painter", "painters", ""), ("neighbor", "neighbors", ""), ("guest", "guests", ""), ("dancer", "dancers", ""),
    ("writer", "writers", ""), ("lawyer", "lawyers", ""),
]  # fmt: skip
NAMES = {
    "f": ["Mary", "Anna", "Sarah", "Emma", "Linda", "Grace", "Rose", "Julia", "Laura", "Helen"],
    "m": ["John", "David", "Peter", "James", "Tom", "Paul", "Mark", "Henry", "Frank", "George"],
}
ANIMALS = [
    ("dog", "dogs"), ("cat", "cats"), ("horse", "horses"), ("bird", "birds"), ("cow", "cows"), ("rabbit", "rabbits"),
    ("mouse", "mice"), ("goose", "geese"), ("fox", "foxes"), ("wolf", "wolves"), ("duck", "ducks"), ("frog", "frogs"),
]  # fmt: skip
THINGS = [
    ("book", "books"), ("chair", "chairs"), ("table", "tables"), ("window", "windows"), ("door", "doors"),
    ("cup", "cups"), ("box", "boxes"), ("bottle", "bottles"), ("picture", "pictures"), ("letter", "letters"),
    ("car", "cars"), ("apple", "apples"), ("shirt", "shirts"), ("knife", "knives"), ("glass", "glasses"),
    ("key", "keys"), ("bag", "bags"), ("lamp", "lamps"), ("coat", "coats"), ("hat", "hats"), ("plate", "plates"),
    ("shoe", "shoes"), ("cake", "cakes"), ("map", "maps"),
]  # fmt: skip
SURFACES = ["table", "floor", "shelf", "bed", "desk", "roof", "bench", "stairs"]
# intransitive verbs: (3rd person singular, base); ``animal`` = also fits an animal subject
INTRANSITIVE_PRESENT = [
    ("sleeps", "sleep", True), ("laughs", "laugh", False), ("smiles", "smile", False), ("runs", "run", True),
    ("waits", "wait", True), ("sings", "sing", False), ("works", "work", False), ("walks", "walk", True),
    ("cries", "cry", False), ("swims", "swim", True), ("dances", "dance", False), ("jumps", "jump", True),
    ("listens", "listen", True), ("eats", "eat", True),
]  # fmt: skip
ADVERBIALS = ["every day", "at night", "in the morning", "very often", "all the time", "after lunch", "quite slowly",
              "in the garden"]
ADJECTIVES = ["happy", "tired", "hungry", "angry", "busy", "ready", "quiet", "late", "sick", "brave", "afraid", "calm"]
# past-tense verbs that cannot take a direct object / that need one
NO_OBJECT = ["arrived", "fainted", "sneezed", "yawned", "vanished", "appeared", "collapsed", "slept", "laughed",
             "smiled", "hesitated", "shivered"]
NEED_OBJECT = ["found", "bought", "grabbed", "borrowed", "mentioned", "described", "needed", "wanted", "lifted",
               "brought", "admired", "noticed"]
REFLEXIVE_VERBS = ["hurt", "saw", "helped", "blamed", "praised", "admired", "described", "trusted", "fooled", "warned"]
# (simple past, past participle, objects it fits) for verbs whose two forms differ
IRREGULAR = [
    ("took", "taken", ["book", "key", "bag", "coat", "map"]), ("broke", "broken", ["window", "glass", "plate", "lamp"]),
    ("stole", "stolen", ["car", "bag", "key", "picture"]), ("chose", "chosen", ["book", "hat", "shirt", "cake"]),
    ("wrote", "written", ["letter", "book", "song"]), ("ate", "eaten", ["apple", "cake"]),
    ("hid", "hidden", ["key", "box", "letter", "knife"]), ("drew", "drawn", ["picture", "map"]),
    ("threw", "thrown", ["ball", "apple", "shoe"]), ("forgot", "forgotten", ["key", "bag", "coat", "hat"]),
    ("drove", "driven", ["car", "truck"]), ("wore", "worn", ["coat", "hat", "shirt"]), ("sang", "sung", ["song"]),
    ("shook", "shaken", ["bottle", "box"]), ("froze", "frozen", ["cake", "bottle"]),
]  # fmt: skip


def _cap(s: str) -> str:
    return s[0].upper() + s[1:] + "."


def _subject(rng: random.Random, *, plural: bool, animals: bool = False) -> str:
    pool = [p[1 if plural else 0] for p in PEOPLE]
    if animals:
        pool += [a[1 if plural else 0] for a in ANIMALS]
    return "the " + rng.choice(pool)


def _name(rng: random.Random, gender: str | None = None) -> tuple[str, str]:
    g = gender or rng.choice("fm")
    return rng.choice(NAMES[g]), g


# --- paradigms: each returns (good, bad) for one random draw ------------------------------
def _sv_singular(rng: random.Random) -> tuple[str, str]:
    v3, base, animal = rng.choice(INTRANSITIVE_PRESENT)
    subj = _subject(rng, plural=False, animals=animal)
    adv = rng.choice(ADVERBIALS)
    return _cap(f"{subj} {v3} {adv}"), _cap(f"{subj} {base} {adv}")


def _sv_plural(rng: random.Random) -> tuple[str, str]:
    v3, base, animal = rng.choice(INTRANSITIVE_PRESENT)
    subj = _subject(rng, plural=True, animals=animal)
    adv = rng.choice(ADVERBIALS)
    return _cap(f"{subj} {base} {adv}"), _cap(f"{subj} {v3} {adv}")


def _sv_attractor(rng: random.Random) -> tuple[str, str]:
    """Agreement with the head noun across a prepositional phrase holding the other number."""
    v3, base, _ = rng.choice(INTRANSITIVE_PRESENT)
    plural = rng.random() < 0.5
    head = _subject(rng, plural=plural)
    other = rng.choice(THINGS)[0 if plural else 1]
    prep = rng.choice(["near", "beside", "behind"])
    good, bad = (base, v3) if plural else (v3, base)
    return _cap(f"{head} {prep} the {other} {good}"), _cap(f"{head} {prep} the {other} {bad}")


def _aux_agreement(rng: random.Random) -> tuple[str, str]:
    plural = rng.random() < 0.5
    subj = _subject(rng, plural=plural, animals=True)
    adj = rng.choice(ADJECTIVES)
    good, bad = ("are", "is") if plural else ("is", "are")
    tail = rng.choice(["today", "again", "now", "tonight"])
    return _cap(f"{subj} {good} {adj} {tail}"), _cap(f"{subj} {bad} {adj} {tail}")


def _determiner_noun(rng: random.Random) -> tuple[str, str]:
    sg, pl = rng.choice(THINGS)
    name, _ = _name(rng)
    verb = rng.choice(["saw", "bought", "liked", "cleaned", "moved", "wanted", "found", "sold"])
    det_sg, det_pl = rng.choice([("this", "these"), ("that", "those")])
    if rng.random() < 0.5:
        return _cap(f"{name} {verb} {det_sg} {sg}"), _cap(f"{name} {verb} {det_sg} {pl}")
    return _cap(f"{name} {verb} {det_pl} {pl}"), _cap(f"{name} {verb} {det_pl} {sg}")


def _anaphor_gender(rng: random.Random) -> tuple[str, str]:
    g = rng.choice("fm")
    if rng.random() < 0.5:
        subj = _name(rng, g)[0]
    else:
        subj = "the " + rng.choice([p[0] for p in PEOPLE if p[2] == g])
    verb = rng.choice(REFLEXIVE_VERBS)
    good, bad = ("herself", "himself") if g == "f" else ("himself", "herself")
    return _cap(f"{subj} {verb} {good}"), _cap(f"{subj} {verb} {bad}")


def _anaphor_number(rng: random.Random) -> tuple[str, str]:
    sg, pl, g = rng.choice(PEOPLE)
    verb = rng.choice(REFLEXIVE_VERBS)
    if rng.random() < 0.5:
        bad = {"f": "herself", "m": "himself"}.get(g) or rng.choice(["himself", "herself"])
        return _cap(f"the {pl} {verb} themselves"), _cap(f"the {pl} {verb} {bad}")
    if not g:  # "the teacher ... themselves" is fine (singular they): use a gendered noun
        sg, _, g = rng.choice([p for p in PEOPLE if p[2]])
    own = "herself" if g == "f" else "himself"
    return _cap(f"the {sg} {verb} {own}"), _cap(f"the {sg} {verb} themselves")


def _transitive(rng: random.Random) -> tuple[str, str]:
    subj = _subject(rng, plural=rng.random() < 0.5)
    obj = rng.choice(THINGS)[0]
    return _cap(f"{subj} {rng.choice(NEED_OBJECT)} the {obj}"), _cap(f"{subj} {rng.choice(NO_OBJECT)} the {obj}")


def _intransitive(rng: random.Random) -> tuple[str, str]:
    subj = _subject(rng, plural=rng.random() < 0.5)
    return _cap(f"{subj} {rng.choice(NO_OBJECT)}"), _cap(f"{subj} {rng.choice(NEED_OBJECT)}")


def _irregular_participle(rng: random.Random) -> tuple[str, str]:
    past, part, objs = rng.choice(IRREGULAR)
    plural = rng.random() < 0.5
    subj = _subject(rng, plural=plural)
    aux = "have" if plural else "has"
    obj = rng.choice(objs)
    return _cap(f"{subj} {aux} {part} the {obj}"), _cap(f"{subj} {aux} {past} the {obj}")


def _wh_no_gap(rng: random.Random) -> tuple[str, str]:
    name, _ = _name(rng)
    know = rng.choice(["knew", "forgot", "heard", "said"])
    subj = _subject(rng, plural=rng.random() < 0.5)
    clause = f"{subj} {rng.choice(NEED_OBJECT)} the {rng.choice(THINGS)[0]}"
    return _cap(f"{name} {know} that {clause}"), _cap(f"{name} {know} what {clause}")


def _wh_with_gap(rng: random.Random) -> tuple[str, str]:
    name, _ = _name(rng)
    know = rng.choice(["knew", "forgot", "asked", "wondered"])
    clause = f"{_subject(rng, plural=rng.random() < 0.5)} {rng.choice(NEED_OBJECT)}"
    return _cap(f"{name} {know} what {clause}"), _cap(f"{name} {know} that {clause}")


def _existential_there(rng: random.Random) -> tuple[str, str]:
    sg, pl = rng.choice(THINGS)
    where = rng.choice(SURFACES)
    if rng.random() < 0.5:
        good, bad = rng.choice([("a", "every"), ("one", "each")])
        return _cap(f"there was {good} {sg} on the {where}"), _cap(f"there was {bad} {sg} on the {where}")
    good, bad = rng.choice([("some", "all"), ("many", "most"), ("few", "both")])
    return _cap(f"there were {good} {pl} on the {where}"), _cap(f"there were {bad} {pl} on the {where}")


def _npi_ever(rng: random.Random) -> tuple[str, str]:
    bad = rng.choice(["somebody", "everybody"])
    obj = rng.choice(THINGS)[0]
    verb = rng.choice(NEED_OBJECT)
    return _cap(f"nobody ever {verb} the {obj}"), _cap(f"{bad} ever {verb} the {obj}")


# UID -> (field, linguistics term, generator); UIDs follow BLiMP's names where one exists
PARADIGMS: dict[str, tuple[str, str, Callable[[random.Random], tuple[str, str]]]] = {
    "regular_plural_subject_verb_agreement_1": ("morphology", "subject_verb_agreement", _sv_singular),
    "regular_plural_subject_verb_agreement_2": ("morphology", "subject_verb_agreement", _sv_plural),
    "distractor_agreement_prepositional": ("morphology", "subject_verb_agreement", _sv_attractor),
    "subject_aux_agreement": ("morphology", "subject_verb_agreement", _aux_agreement),
    "determiner_noun_agreement_1": ("morphology", "determiner_noun_agreement", _determiner_noun),
    "anaphor_gender_agreement": ("morphology", "anaphor_agreement", _anaphor_gender),
    "anaphor_number_agreement": ("morphology", "anaphor_agreement", _anaphor_number),
    "transitive": ("syntax", "argument_structure", _transitive),
    "intransitive": ("syntax", "argument_structure", _intransitive),
    "irregular_past_participle_verbs": ("morphology", "irregular_forms", _irregular_participle),
    "wh_vs_that_no_gap": ("syntax", "filler_gap_dependency", _wh_no_gap),
    "wh_vs_that_with_gap": ("syntax", "filler_gap_dependency", _wh_with_gap),
    "existential_there_quantifiers": ("semantics", "quantifiers", _existential_there),
    "sentential_negation_npi_licensor_present": ("semantics", "npi_licensing", _npi_ever),
}


def generate_minimal_pairs(n_per_paradigm: int = 45, *, seed: int = 0) -> list[dict[str, str]]:
    """Distinct pairs, ``n_per_paradigm`` per paradigm (fewer only if a paradigm runs out).

    Deterministic under ``seed``: each paradigm draws from its own seeded stream.
    """
    rows = []
    for uid, (field, term, make) in PARADIGMS.items():
        rng = random.Random(f"{seed}:{uid}")
        seen: set[str] = set()
        tries = 0
        while len(seen) < n_per_paradigm and tries < 200 * max(n_per_paradigm, 1):
            tries += 1
            good, bad = make(rng)
            if good in seen:
                continue
            seen.add(good)
            rows.append({"sentence_good": good, "sentence_bad": bad, "UID": uid, "field": field,
                         "linguistics_term": term})
    return rows


def write_minimal_pairs(path: str | Path, n_per_paradigm: int = 45, *, seed: int = 0) -> int:
    """Write the generated pairs as BLiMP JSONL; returns how many."""
    rows = generate_minimal_pairs(n_per_paradigm, seed=seed)
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))
    return len(rows)

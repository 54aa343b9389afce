"""Procedurally generated children's stories (TinyStories-like), deterministic in (seed, index).

A story is a *cast* (two to four named characters plus an unnamed parent), a
*setting* (one of ~22 places with its own features, animals and activities),
an *object*, a *food*, a *feeling* and one of twelve *story shapes*:

    lost object, new friend, problem solved, trip, lesson learned, surprise,
    being brave, helping, contest or game, making something, weather day,
    magic find

Each shape is a sequence of beats; each beat picks one of several sentence
templates, each template has inline choices (``[ran|hurried]``), and optional
beats (play, search, small talk, scenery, a twist, a moral, a sad ending) are
added until the story reaches a length drawn between ``min_words`` and
``max_words``. Names recur (what the induction metric needs): the hero is
named in most sentences that are about them, pronouns and dialogue fill the
rest, and every named character is mentioned at least twice.

Example:
    >>> story = generate_story(seed=0, index=3)
    >>> 80 <= len(story.text.split()) <= 300 and 2 <= len(story.names) <= 4
    True
    >>> story == generate_story(seed=0, index=3)      # deterministic
    True
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from . import lexicon
from .lexicon import Thing
from .names import pick_name
from .writer import Writer

# ---------------------------------------------------------------------------
# helpers


def plural(noun: str) -> str:
    """English plural of an animal noun.

    Example:
        >>> plural("puppy"), plural("mouse"), plural("fox"), plural("sheep")
        ('puppies', 'mice', 'foxes', 'sheep')
    """
    irregular = {"mouse": "mice", "sheep": "sheep", "deer": "deer", "fish": "fish", "starfish": "starfish",
                 "jellyfish": "jellyfish", "goose": "geese", "octopus": "octopuses", "bear cub": "bear cubs"}
    if noun in irregular:
        return irregular[noun]
    if noun.endswith(("s", "x", "ch", "sh")):
        return noun + "es"
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    return noun + "s"


def _sample(rng: random.Random, seq, k: int):
    """k distinct items (or all of them, shuffled, if fewer)."""
    return rng.sample(seq, min(k, len(seq)))


HUMAN_PLACES = tuple(p for p in lexicon.PLACES)
ANIMAL_PLACES = tuple(p for p in lexicon.PLACES if p.noun in (
    "forest", "meadow", "river", "lake", "farm", "garden", "mountain", "snowy hill", "island", "park", "beach"))
PET_ACTS = {
    "dog": ("barked", "wagged {his} tail", "ran in circles"), "puppy": ("barked", "wagged {his} tail", "jumped up and down"),
    "cat": ("meowed", "purred", "stretched and yawned"), "kitten": ("meowed", "purred", "chased {his} tail"),
    "bunny": ("hopped around", "twitched {his} nose"), "parrot": ("squawked", "flapped {his} wings"),
    "hamster": ("ran in {his} wheel", "squeaked"), "turtle": ("poked {his} head out", "blinked slowly"),
}
PETS = tuple(PET_ACTS)
VEHICLES = ("by car", "by bus", "by train", "on their bikes", "on foot", "in a little boat", "in Grandpa's truck")
HOMES = ("a small house near {place:the}", "a blue house with a red door", "a little house at the end of the street",
         "a yellow house on a hill", "a big old house with a garden", "a cozy house by {place:the}",
         "a tall building in the city", "a little cottage in the village", "a white house with a green gate")
AGES = ("four", "five", "six", "seven", "three")
# Foods one can bake or cook (for the baking, patience and surprise beats).
BAKED = (("cookies", "p"), ("cake", "c"), ("pie", "c"), ("muffins", "p"), ("bread", "m"), ("cupcakes", "p"),
         ("pancakes", "p"), ("pizza", "m"), ("corn muffins", "p"), ("apple pie", "c"), ("banana bread", "m"),
         ("soup", "m"), ("gingerbread men", "p"), ("lemon cake", "c"))
# Small animals one can rescue.
RESCUE = ("kitten", "puppy", "bunny", "duckling", "bird", "squirrel", "hedgehog", "lamb", "chick", "mouse",
          "frog", "turtle", "baby fox", "little goat")


@dataclass(frozen=True)
class Story:
    """A generated story: its text and its named characters (first names, in order of casting)."""

    text: str
    names: tuple[str, ...]
    shape: str


# ---------------------------------------------------------------------------
# casting


def _cast(w: Writer, rng: random.Random, n_named: int) -> None:
    """Choose the characters, the setting, the object and everything else in ``w.ctx``."""
    ctx = w.ctx
    taken: set[str] = set()

    def name(g: str) -> str:
        n = pick_name(rng, g, taken)
        taken.add(n)
        return n

    animal_world = rng.random() < 0.3
    ga = "f" if rng.random() < 0.5 else "m"
    if animal_world:
        kind_a = w.pick(lexicon.HERO_ANIMALS)
        kind_b = w.pick([k for k in lexicon.HERO_ANIMALS if k != kind_a])
        place = w.pick(ANIMAL_PLACES)
        home = lexicon.ANIMAL_HOMES.get(kind_a, "a cozy home " + ("in " if place.prep == "in" else "near ") + f"the {place.noun}")
    else:
        kind_a = {"f": "girl", "m": "boy"}[ga]
        place = w.pick(HUMAN_PLACES)
        home = w.pick(HOMES)
    gb = "f" if rng.random() < 0.5 else "m"
    if not animal_world:
        kind_b = {"f": "girl", "m": "boy"}[gb]
    w.cast("A", name(ga), ga, kind_a)
    B = w.cast("B", name(gb), gb, kind_b)
    ctx["animal_world"] = animal_world
    # B's relation to A
    if animal_world:
        rel = w.pick(("friend", "best friend", "neighbor", "friend"))
    else:
        rel = w.pick(("friend", "best friend", "friend", "neighbor", "cousin",
                      {"f": "sister", "m": "brother"}[gb], {"f": "big sister", "m": "little brother"}[gb]))
    ctx["Brel"] = rel
    B.role = rel
    # extras: C and D
    for slot in ("C", "D")[: n_named - 2]:
        g = "f" if rng.random() < 0.5 else "m"
        if animal_world:
            role = w.pick(("friend", "friend", "elder", "sibling"))
            kind = w.pick(lexicon.HERO_ANIMALS)
        else:
            role = w.pick(("friend", "friend", "sibling", "pet", "pet", "neighbor", "teacher" if place.noun == "school" else "friend"))
            kind = {"f": "girl", "m": "boy"}[g]
            if role == "pet" and any(ctx[s].role == "pet" for s in ("C",) if slot == "D" and w.has("C")):
                role = "friend"
            if role == "pet":
                kind = w.pick(PETS)
        title = ""
        if role in ("neighbor", "teacher"):
            title = w.pick({"f": ("Mrs.", "Miss", "Aunt"), "m": ("Mr.", "Uncle")}[g]) if role == "neighbor" else (
                "Miss" if g == "f" else "Mr.")
        if role == "elder":
            kind = w.pick(("owl", "turtle", "bear", "goat", "elephant"))
        w.cast(slot, name(g), g, kind, role=role, title=title)
    for slot in ("C", "D"):
        ctx.setdefault(slot, None)
    # the parent (unnamed)
    ctx["P"] = w.cast("P", *w.pick((("Mom", "f"), ("Dad", "m"), ("Mom", "f"), ("Dad", "m"),
                                     ("Grandma", "f"), ("Grandpa", "m"))), "parent", named=False)
    set_place(w, place)
    an2 = w.pick(lexicon.ANIMALS)
    ctx["animal2"] = Thing(an2)
    ctx["animals2"] = plural(an2)
    noun, adjs, pl_ = w.pick(lexicon.OBJECTS)
    ctx["obj"] = Thing(noun, w.pick(adjs), plural=pl_)
    noun2, adjs2, pl2 = w.pick([o for o in lexicon.OBJECTS if o[0] != noun])
    ctx["obj2"] = Thing(noun2, w.pick(adjs2), plural=pl2)
    fname, fkind = w.pick(lexicon.FOODS)
    ctx["food"] = Thing(fname, plural=fkind == "p", mass=fkind == "m")
    ctx["home"] = w.render(home)
    ctx["hobby"], ctx["hobby2"], ctx["hobby3"] = _sample(rng, lexicon.HOBBIES, 3)  # the hero's two, a friend's one
    ctx["Akind"] = Thing(kind_a)
    ctx["Bkind"] = Thing(kind_b)
    small = w.pick(lexicon.SMALL_ADJ)
    ctx["Adesc"] = Thing(kind_a, f"{w.pick(lexicon.KIND_ADJ)} {small}" if rng.random() < 0.6 else small)
    ctx["Bdesc"] = Thing(kind_b, w.pick(lexicon.KIND_ADJ))
    ctx["Aadj"] = w.pick(lexicon.KIND_ADJ)
    ctx.update(
        game=w.pick(lexicon.GAMES), color=w.pick(lexicon.COLORS),
        color2=w.pick(lexicon.COLORS),
        weather=w.pick(lexicon.WEATHER if place.noun in ("snowy hill", "mountain") else tuple(x for x in lexicon.WEATHER if x != "snowy")),
        time=w.pick(lexicon.TIMES), day=w.pick(lexicon.DAYS), season=w.pick(lexicon.SEASONS), sound=w.pick(lexicon.SOUNDS),
        happy=w.pick(lexicon.HAPPY), happy2=w.pick(lexicon.HAPPY), sad=w.pick(lexicon.SAD), scared=w.pick(lexicon.SCARED),
        age=w.pick(AGES), vehicle=w.pick(VEHICLES),
    )


def set_place(w: Writer, place) -> None:
    """Put ``place`` (a :class:`~generators.induction.lexicon.Place` or its noun) and what is there in the context.

    Example:
        >>> w = demo_writer(); set_place(w, "zoo"); f"{w.ctx['place']:at}"
        'at the zoo'
    """
    if isinstance(place, str):
        place = next(p for p in lexicon.PLACES if p.noun == place)
    ctx, rng = w.ctx, w.rng
    ctx["place"] = place
    f = _sample(rng, place.features, 4)
    ctx.update(feat=f[0], feat2=f[1], feat3=f[2], feat4=f[3 % len(f)])
    pl = _sample(rng, place.play, len(place.play))
    ctx.update(play1=pl[0], play2=pl[1], play3=pl[2])
    ctx["_plays"] = pl[3:]  # fresh activities for the play filler
    an = w.pick(place.animals)
    ctx["animal"] = Thing(an)
    ctx["animals"] = plural(an)


def demo_writer(seed: int = 0, n_named: int = 2, target_words: int = 150) -> Writer:
    """A writer with a cast and a setting, to try beats by hand.

    Example:
        >>> w = demo_writer(); w.sentence("{A} and {B} went {place:to}."); w.text().count(" ") > 3
        True
    """
    rng = random.Random(f"demo:{seed}")
    w = Writer(rng, target_words)
    _cast(w, rng, n_named)
    return w


def _extras(w: Writer) -> list[str]:
    return [s for s in ("C", "D") if w.has(s)]


# ---------------------------------------------------------------------------
# openings

STOCK_OPENERS = ("Once upon a time", "One day", "Once there was", "There once was", "Long ago")


def opening(w: Writer) -> None:
    """First one or two sentences: who the hero is (and sometimes where and when).

    Example:
        >>> w = demo_writer(); opening(w); w.words > 3
        True
    """
    animal = w.ctx["animal_world"]
    x = w.rng.random()
    if x > 0.94:  # a line of dialogue first
        if w.chance(0.5):
            w.say("P", "[Wake up|Good morning|Time to get up], {A}!", "{A}, [breakfast is ready|it is a beautiful day]!", pattern=0)
        else:
            w.say("A", "[Look|Come and see|Guess what], {P}!", "{P}, {P}, [wake up|come quick]!")
            w.sentence("{A} ran into the room [with a big smile|in {A:his} pajamas|with {obj:a}].")
    elif x < 0.05:
        w.sentence("Once upon a time, there was {Adesc:a} named {A}.",
            "Once upon a time, in {home}, there lived {Adesc:a} called {A}.")
    elif x < 0.09:
        w.sentence("Once there was {Adesc:a} named {A} who loved {hobby}.",
            "There once was {Adesc:a} named {A}.", "Long ago, {Adesc:a} named {A} lived in {home}.")
    elif x < 0.15:
        w.sentence("One day, {Adesc:a} named {A} [woke up early|looked out of the window|was feeling {happy}].",
            "One {weather} {time}, {A} [woke up early|could not wait to go outside|was humming a song].")
    else:
        w.sentence("{A} was {Adesc:a} who lived in {home}.",
            "{A} loved {hobby} more than anything.",
            "It was a {weather} {time}, and {A} [could not sit still|was bored|wanted to go outside|was humming a little song].",
            "{A} woke up early on {day}[ morning|].",
            "On a {weather} {day}, {A} [looked out of the window|put on {A:his} shoes|jumped out of bed].",
            "In {home} lived {Adesc:a} named {A}.",
            "Not far from {place:the} lived {Adesc:a} called {A}.",
            "This is a story about {A}, {Adesc:a} who loved {hobby}.",
            "{A} was {Adesc:a} with a [big|bright|shy|happy] smile.",
            "Have you ever met {Akind:a} who loved {hobby}? {A} was one.",
            "Every {day}, {A} [went|liked to go] {place:to}.",
            "The sun was [shining|coming up|warm] when {A} [opened {A:his} eyes|ran outside|woke up].",
            "It was the first day of {season}, and {A} was [so excited|very happy|full of plans].",
            "Everyone who knew {A} said that {A:he} was [very|really|so] {Aadj}.",
            "{A} was {age} years old and [very {Aadj}|full of questions|always busy]." if not animal else
            "{A} was a {Aadj} young {Akind} who lived in {home}.",
            "There was {Adesc:a} named {A}, and {A:he} had {obj:a}.",
            "Today was a special day for {A}.")
    if w.chance(0.55):
        w.sentence("{A} liked {hobby} and {hobby2}.",
            "{A:Ref} had [big|bright|kind] [blue|brown|green|black] eyes and a [loud|soft|funny|happy] laugh." if w.ctx["animal_world"] else
            "{A:Ref} had {color} [shoes|boots|socks] and a [loud|soft|funny|happy] laugh.",
            "{A:Ref} lived with {P}[, who loved {A:him} very much|, who told the best stories|].",
            "{A}'s favorite food was {food}.",
            "{A:Ref} was [always|very] {Aadj}, and {A:he} [liked to help|loved to learn new things|was always busy].")


def introduce_b(w: Writer) -> None:
    """Introduce B, the hero's friend or sibling (shapes where they meet later skip this).

    Example:
        >>> w = demo_writer(); introduce_b(w); w.ctx["B"].name in w.text()
        True
    """
    rel = w.ctx["Brel"]
    if rel in ("sister", "brother", "big sister", "little brother"):
        w.sentence("{A} had a {Brel} named {B}.", "{A:His} {Brel}, {B}, [was always full of ideas|liked to do everything {A} did|loved {hobby3}].",
            "{A} shared a room with {A:his} {Brel}, {B}.")
    elif rel == "cousin":
        w.sentence("{A}'s cousin {B} was visiting for the [week|holidays|weekend].", "{A:His} cousin {B} [lived close by|came to play every {day}].")
    elif w.ctx["animal_world"]:
        w.sentence("{A}'s best friend was {B}, {Bdesc:a}.", "{B} the {Bkind} was {A}'s [best|oldest] friend.",
            "{A} had a friend named {B}, {Bdesc:a} who lived [nearby|close by|down the path].")
    else:
        w.sentence("{A}'s [best |]friend was {B}, {Bdesc:a} who lived [next door|down the street|across the road].",
            "{A:His} [best |]friend {B} [lived next door|was always ready to play|liked {hobby3}].",
            "{B} was {A}'s [best|good|oldest] friend.", "{A} and {B} were {Brel}s and did everything together.")


def _s_new(w: Writer, used: set, *templates: str) -> None:
    """Like ``w.sentence``, but C and D never get the same template (``used`` holds the first words of those used)."""
    key = [t.split()[0].replace("{D", "{C") + str(i) for i, t in enumerate(templates)]
    fresh = [i for i in range(len(templates)) if key[i] not in used] or list(range(len(templates)))
    i = w.pick(fresh)
    used.add(key[i])
    w.sentence(templates[i])


def introduce_extras(w: Writer) -> None:
    """Introduce C and D (if cast) by their role; every named character gets a first mention.

    Example:
        >>> w = demo_writer(n_named=4); introduce_extras(w); all(w.ctx[s].name in w.text() for s in "CD")
        True
    """
    used: set[str] = set()
    for slot in _extras(w):
        X = w.ctx[slot]
        t = {"C": "{C}", "D": "{D}"}[slot]
        he = t[:-1] + ":he}"
        role = X.role
        if role == "pet":
            _s_new(w, used, f"{{A}} had a [fluffy|little|happy|lazy|spotted|sleepy] {X.kind} named {t}.",
                f"{{A}}'s {X.kind}, {t}, [followed {{A:him}} everywhere|liked to sleep in the sun|was always hungry].",
                f"At home there was also {t}, a [playful|fat|clever|little] {X.kind}.")
        elif role == "sibling":
            _s_new(w, used, f"{{A}} had a [little|big] {'sister' if X.gender == 'f' else 'brother'} named {t}.",
                f"{{A:His}} [little|big] {'sister' if X.gender == 'f' else 'brother'}, {t}, [liked to follow {{A:him}} everywhere|was always full of ideas|loved {{hobby3}}].")
        elif role in ("neighbor",):
            _s_new(w, used, f"Next door lived [kind|old|cheerful|tall] {t}, who [grew big tomatoes|had a funny hat|told the best stories|baked every day].",
                f"{t} from next door [often waved at {{A}}|had a garden full of flowers|liked to sit on the porch].")
        elif role == "teacher":
            _s_new(w, used, f"{{A:His}} teacher was {t}, who [always smiled|had a soft voice|knew lots of songs].",
                f"{t} was the [nicest|best|kindest] teacher at the school.")
        elif role == "elder":
            _s_new(w, used, f"Nearby lived a wise old {X.kind} named {t}.",
                f"Everyone asked {t}, the old {X.kind}, when they needed help.")
        else:  # friend
            if w.ctx["animal_world"]:
                _s_new(w, used, f"{{A}} had another friend, a [little|young|funny] {X.kind} named {t}.",
                    f"{t} the {X.kind} was {{A}}'s friend too.",
                    f"Sometimes {t}, a [shy|noisy|clever] {X.kind}, came to play with them.")
            else:
                _s_new(w, used, f"{{A}} had another friend named {t}, who lived [down the street|across the road|next door].",
                    f"{t} was {{A}}'s friend [from school|from next door|too], and {he} [liked {{hobby3}}|was very funny|was a little shy].",
                    f"[Sometimes|Often] {t} from [school|down the street] came to play too.")


def extra_cameo(w: Writer, slot: str, mood: str = "play") -> None:
    """A sentence (or line of dialogue) for an extra character in the middle of a story.

    Example:
        >>> w = demo_writer(n_named=3); extra_cameo(w, "C"); w.ctx["C"].name in w.text()
        True
    """
    X = w.ctx[slot]
    t = "{" + slot + "}"
    his = t[:-1] + ":his}"
    if X.role == "pet":
        act = "[" + "|".join(PET_ACTS[X.kind]).replace("{his}", his) + "]"
        w.sentence(f"{t} {act}.", f"{t} the {X.kind} [came too|followed close behind|watched them]." if X.kind in ("dog", "puppy")
            else f"{t} the {X.kind} watched [them|everything] from {his} [box|basket|corner].",
            f"Even {t} [seemed to know something was going on|sat still and watched|looked up at {{A}}].")
    elif mood == "worry":
        w.sentence(f"{t} [came over|ran up] and asked what was wrong.", f"{t} [saw|noticed] that {{A}} looked {{sad}}.")
        w.say(slot, "[Can I help|What happened], {A}?", "Don't be {sad}, {A}. [I will help|We can fix this].", tone="kind")
    else:
        w.sentence(f"{t} [came along|joined them|came running] and [waved|smiled|laughed].",
            f"Then {t} [showed up|came by] with {{food:a}} for everyone.",
            f"{t} [came along|joined them] and [clapped|cheered|laughed].")
        if w.chance(0.5):
            w.say(slot, "[Can I play too|Can I come with you|What are you doing]?", "[This is so much fun|I love {place}|Wait for me]!")


def extras_end(w: Writer) -> None:
    """A last mention of each extra character near the end.

    Example:
        >>> w = demo_writer(n_named=3); extras_end(w); w.ctx["C"].name in w.text()
        True
    """
    used: set[str] = set()
    for slot in _extras(w):
        X = w.ctx[slot]
        t = "{" + slot + "}"
        if X.role == "pet":
            act = "[" + "|".join(PET_ACTS[X.kind]).replace("{his}", t[:-1] + ":his}") + "]"
            _s_new(w, used, f"{t} [curled up|lay down] [next to|at the feet of] {{A}} and [went to sleep|closed {t[:-1]}:his}} eyes].",
                f"{t} {act}, as if {t[:-1]}:he}} understood.")
        elif X is w.ctx.get("S"):  # the one who got the surprise
            _s_new(w, used, f"{t} [kept smiling all day|said it was the best birthday ever|put the card on the wall].")
        else:
            _s_new(w, used, f"{t} [gave {{A}} a big hug|said it was a great day|was proud of {{A}}].",
                f"Later, {t} came to hear all about it.", f"When {t} heard the story, {t[:-1]}:he}} [laughed|smiled|clapped].",
                f"{t} [waved goodbye with a smile|went home happy].")


# ---------------------------------------------------------------------------
# filler beats, used by every shape to reach the target length


def fill(w: Writer, mood: str, frac: float, most: int = 3) -> None:
    """Add up to ``most`` beats of ``mood`` while the story is shorter than ``frac`` of its target.

    Moods: play, search, scene, walk, talk, worry, alone.

    Example:
        >>> w = demo_writer(); fill(w, "play", 1.0, most=2); w.words > 0
        True
    """
    for _ in range(most):
        if not w.room(frac):
            return
        FILLERS[mood](w)


def _play(w: Writer) -> None:
    x = w.rng.random()
    if x < 0.3 and w.ctx["_plays"]:
        w.ctx["playx"] = w.ctx["_plays"].pop()
        w.sentence("They {playx}.", "Then they {playx}.", "{A} and {B} {playx}.", "After that, they {playx}.",
            "Next, {A} and {B} {playx}.")
    elif x < 0.45:
        w.sentence("They played {game} [until they were tired|for a long time|and laughed a lot].",
            "{B} wanted to play {game}, so they did.")
    elif x < 0.6:
        who = w.pick("AB")
        w.say(who, "[This is so much fun|I love it here|Let's do it again|Watch me]!",
              "Can we stay a little longer?", "Look at me, {B}!" if who == "A" else "Look at me, {A}!", tone="happy")
    elif x < 0.75 and w.ctx["place"].outdoor:
        w.sentence(*lexicon.SKY[w.ctx["weather"]],
            "Some {animals} [watched them|played nearby|came to look].", "{animal:A} [ran|hopped|went] past them.")
    elif x < 0.85 and _extras(w):
        extra_cameo(w, w.pick(_extras(w)))
    else:
        w.sentence("{A} [laughed|giggled] when {B} [fell in the grass|made a funny face|sneezed].",
            "{B} showed {A} how to [whistle|skip|do a cartwheel|hop on one foot].",
            "{A:Ref} felt {happy}.", "{A} [ran|raced] to {feat2} and back.")


def _search(w: Writer) -> None:
    x = w.rng.random()
    if x < 0.35:
        w.sentence("They looked [near|by|around] {feat2}.", "{A} looked [near|by|around] {feat3}, but {obj:it} {obj:was} not there.",
            "{B} [checked|looked] [near|around] {feat4}.", "They looked [high and low|everywhere|in every corner].")
    elif x < 0.55:
        w.say(w.pick("AB"), "Where could {obj:it} be?", "Maybe {obj:it} {obj:is} near {feat2}!", "Let's look over there!",
              "Did you look near {feat3}?", tone="")
    elif x < 0.7:
        w.sentence("{B} asked {animal:a} if it had seen {obj:the}, but the {animal:noun} only [blinked|looked at them|went away].",
            "They asked everyone they met, but no one had seen {obj:the}.")
    elif x < 0.85 and _extras(w):
        extra_cameo(w, w.pick(_extras(w)), "worry")
    else:
        w.sentence("{A} [felt like crying|wanted to give up|sat down with a sigh].", "{A:Ref} was getting [tired|{sad}].",
            "It was getting late.")


def _scene(w: Writer) -> None:
    if w.ctx["place"].outdoor:
        w.sentence(*lexicon.SKY[w.ctx["weather"]], "[Birds sang in the trees|Bees buzzed in the flowers|A bird sang somewhere].",
            "{animal:A} [watched them|sat near {feat}].", "The air smelled of [flowers|rain|grass|the sea|bread].",
            "There were [many|lots of] {animals} [around|near {feat2}].", "Far away, [a dog barked|a bell rang|someone laughed].")
    else:
        w.sentence("It was [warm|quiet|bright|busy] inside.", "[Many people|Some children] were there too.",
            "{A} could hear [music|laughing|a clock ticking].", "{A} looked at {feat2}.")


def _walk(w: Writer) -> None:
    w.sentence("They walked past {feat2}.", "The path went [up a little hill|over a bridge|through the trees|around a big rock].",
        "{A} [hummed a song|skipped along|counted the [trees|clouds|birds]] on the way.",
        "On the way, they saw {animal2:a}.", "{B} [held|took] {A}'s hand.", "They walked and walked.")


def _talk(w: Writer) -> None:
    # four kinds of small talk; a story uses each at most once while others are left
    used = w.ctx.setdefault("_talked", set())
    kinds = [k for k in range(4) if k not in used] or list(range(4))
    k = w.pick(kinds)
    used.add(k)
    if k == 0:
        what = w.pick(("color", "food", "animal"))
        answer = {"color": "I like {color}!", "food": "I love {food}!", "animal": "I like {animals2}!"}[what]
        w.say("A", "What is your favorite " + what + ", {B}?")
        if w.chance(0.7):
            w.say("B", answer, "[Hmm, let me think|That is easy]. " + answer)
        else:
            w.say("B", "Hmm, I don't know. What about you?")
            w.say("A", answer.replace("{color}", "{color2}"))
    elif k == 1:
        w.say("B", "Do you want to hear a joke, {A}?")
        w.say("A", "Yes, please!", "Okay!", "Sure, {B}!")
        w.say("B", "Why did the {animal2:noun} cross the road? To get to the other side!",
              "What do you call a sleepy bull? A bull-dozer!", "Why are fish so smart? They live in schools!")
        w.sentence("{A} laughed so hard that {A:he} [fell over|had to sit down|snorted].", "{A} [giggled|laughed and laughed].")
    elif k == 2:
        w.say("A", "I wish we could do this every day.", "You are [my best friend|so funny], {B}.", tone="happy")
        w.sentence("{B} [smiled|laughed|nodded].", "{B} smiled and said, \"Me too, {A}.\"")
    else:
        w.say("A", "Guess what I saw yesterday, {B}?")
        w.say("B", "What?", "What did you see?")
        w.say("A", "[A big|A tiny|A funny] {animal2:noun}! It [ran|went] right past me!")


def _alone(w: Writer) -> None:
    w.sentence("{A} sat by the window [for a long time|and looked out].", "{A} [kicked a little stone|looked at the floor|sighed].",
        "{A} did not feel like playing.", "The house was very quiet.", "{A} thought about {B}.")


def _worry(w: Writer) -> None:
    w.sentence("{A} felt a little {sad}.", "{A} [sat down|looked around] and [sighed|wiped {A:his} eyes].",
        "{A}'s [lip|chin] began to shake.")
    if w.chance(0.6):
        w.say("B", "We will find a way, {A}.", "Don't worry, {A}. I am here.", tone="kind")


FILLERS = {"play": _play, "search": _search, "scene": _scene, "walk": _walk, "talk": _talk, "worry": _worry,
           "alone": _alone}

# ---------------------------------------------------------------------------
# story shapes


def lost_object(w: Writer) -> None:
    """A lost object: the hero loses a loved thing, friends search, it turns up (or not).

    Example:
        >>> generate_story(0, 0, shape="lost_object").shape
        'lost_object'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    s("{A} had {obj:a}.", "{A}'s favorite thing was {obj:a}.", "{A} had {obj:a} that [{P} gave {A:him}|{A:he} got for {A:his} birthday].")
    s("{A:Ref} loved {obj:it} very much and took {obj:it} everywhere.", "{A} [took {obj:it} everywhere|never let {obj:it} out of sight].",
      "{A:Ref} kept {obj:it} in {A:his} [pocket|bag|room] [all the time|every day].")
    w.para()
    s("One [day|afternoon|morning], {A} and {B} went {place:to} to play.",
      "On {day}, {A} took {obj:the} {place:to} with {B}.", "{A} and {B} [walked|ran|went] {place:to} [after lunch|in the morning|together].")
    fill(w, "play", 0.4, 2)
    s("When it was time to go home, {A} [looked|reached] for {obj:the}, but {obj:it} {obj:was} gone!",
      "Suddenly, {A} [noticed|saw] that {obj:the} {obj:was} not in {A:his} [pocket|bag|hand].",
      "Then {A} stopped. {obj:The} {obj:was} gone!")
    say("A", "Oh no! Where {obj:is} my {obj:noun}?", "My {obj:noun}! I can't find {obj:it}!", tone="sad")
    s("{A} felt {sad}.", "{A:Ref} was very {sad}.", "Tears [came to|filled] {A}'s eyes.")
    say("B", "Don't worry, {A}. I will help you [look|find {obj:it}].", "Let's look together, {A}!",
        "We will find {obj:it}, {A}.", tone="kind")
    fill(w, "search", 0.65, 3)
    x = w.rng.random()
    if x < 0.35:
        if w.chance(0.5):
            s("At last, {B} [saw|spotted] something [shiny|small|bright] near {feat3}.")
            say("B", "Look, {A}! Is that your {obj:noun}?" if not w.ctx["obj"].plural else "Look, {A}! Are those your {obj:noun}?")
            s("[It was|Yes, it was|They were]!" if not w.ctx["obj"].plural else "Yes, they were!")
        else:
            s("Then {B} pointed at {feat3}.")
            say("B", "{A}, look over there!", "Over there, {A}!")
            s("{A} ran over. There was {obj:the}!", "There, on the ground, was {obj:the}!")
    elif x < 0.65:
        s("Then they saw {animal:a} [playing with|sitting on|sniffing] {obj:the}!", "Just then, {animal:a} [came out from|ran past] {feat3} with {obj:the}!")
        say("A", "[Hey, {obj:that} {obj:is} mine|Stop! {obj:It} {obj:is} mine]! Please give {obj:it} back, little {animal:noun}.", tone="")
        s("The {animal:noun} [dropped|let go of] {obj:the} and [ran|went] away.", "The {animal:noun} looked at {A}, then put {obj:the} down.")
    elif x < 0.9:
        s("They went home [slowly|without {obj:it}|with heavy feet].")
        s("But when {A} opened the door, {P} was holding {obj:the}!", "At home, {P} pointed at the table. There was {obj:the}!")
        say("P", "You left {obj:it} [on the table|by the door|on your bed] this morning, {A}!", tone="happy")
        s("{A} [laughed|giggled|blushed].")
    else:
        s("They looked until the sun went down, but they never found {obj:the}.")
        s("{A} was {sad} all evening.")
        say("B", "[Here|Take this], {A}. You can have my {obj2:noun}.", "I will make you a new one, {A}.", tone="kind")
        s("{A} smiled a little. {B} was a [true|good|real] friend.")
        return
    s("{A} hugged {obj:the} [tight|close].", "{A} held {obj:the} close and smiled.", "{A} was so {happy}!")
    say("A", "Thank you, {B}! You are [a good friend|the best|so kind].", "I will never lose {obj:it} again!", tone="happy")
    if w.chance(0.5):
        s("From then on, {A} [always kept {obj:the} in a safe place|was careful with {A:his} things|checked {A:his} pockets before going home].")


def new_friend(w: Writer) -> None:
    """A new friend: a shy or new hero meets B, they play, they become friends.

    Example:
        >>> generate_story(0, 1, shape="new_friend").shape
        'new_friend'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    s("{A} [had just moved to a new town|was new {place:at}] and did not know anyone.", "{A} was a bit shy and often played alone.",
      "{A} wanted a friend to play with.", "Every day, {A} played alone {place:at}.")
    fill(w, "scene", 0.2, 2)
    w.para()
    s("One day {place:at}, {A} saw {Bdesc:a} [sitting alone|playing with {obj:a}|looking at {feat}].",
      "Then {A} saw {Bdesc:a} near {feat}.", "One {time}, {Bkind:a} {A} had never seen [came|walked] over.")
    x = w.rng.random()
    if x < 0.5:
        say("B", "Hi! I am {B}. What is your name?", "Hello! My name is {B}. Do you want to play?", tone="happy")
        say("A", "I am {A}.", "My name is {A}. Yes, I want to play!", tone="")
    else:
        s("{A} wanted to say hello, but {A:he} felt shy.", "{A} was [nervous|shy], but {A:he} went to say hi.")
        say("A", "Hello. My name is {A}. What is yours?", "Hi, I'm {A}. Can I play with you?", tone="")
        say("B", "I am {B}! [Sure|Of course], let's play!", "My name is {B}. I like your {obj2:noun}!", tone="happy")
    w.para()
    fill(w, "play", 0.45, 2)
    fill(w, "talk", 0.55, 1)
    if w.chance(0.5):
        if w.chance(0.5):
            s("Then {B} [fell down|slipped|tripped] and hurt {B:his} knee.")
            s("{A} [helped {B} get up|ran to help].", "{A} knew just what to do.")
        else:
            s("Then {B}'s {obj2:noun} got stuck near {feat2}.", "Then {B} dropped {B:his} {obj2:noun}, and it rolled away.")
            s("{A} [got it back|ran to get it] for {B}.", "{A} knew just what to do.")
        say("B", "Thank you, {A}!", "You are very kind, {A}.", tone="happy")
    elif w.chance(0.4):
        s("At first, {A} thought {B} was [grumpy|mean|too loud].", "Then {B} did something that made {A} [laugh|smile].")
        s("{B} was [only shy|just tired|funny after all].", "{A} found out that {B} was [nice|kind|really funny].")
    fill(w, "play", 0.75, 2)
    w.para()
    s("When it was time to go home, {A} did not want to leave.", "The sun was going down.", "Soon {P} called {A} home.")
    say("A", "Will you play with me again tomorrow, {B}?", "Can we play again tomorrow?", tone="")
    say("B", "Yes! [See you tomorrow|Let's meet here again], {A}!", "Of course, {A}!", tone="happy")
    s("From that day on, {A} and {B} were [best friends|good friends|the best of friends].",
      "{A} and {B} became [best friends|good friends], and they played together every day.")
    if w.chance(0.4):
        s("{A} learned that [saying hello|being brave] can [bring|lead to] a new friend.",
          "{A} was glad {A:he} had said hello.")


def problem_solved(w: Writer) -> None:
    """A problem solved: something stuck, broken or in the way, and a plan that works.

    Example:
        >>> generate_story(0, 2, shape="problem_solved").shape
        'problem_solved'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    kind = w.pick(("stuck_high", "animal_stuck", "broken", "blocked"))
    s("One {weather} {time}, {A} and {B} [went|ran] {place:to}.", "{A} and {B} were playing {place:at}.",
      "{A} took {A:his} {obj} {place:to} with {B}.")
    fill(w, "play", 0.3, 2)
    w.para()
    if kind == "stuck_high":
        s("{A} [threw|tossed] {obj:the} up high, and {obj:it} got stuck in a tall tree!",
          "A big wind came and blew {obj:the} into a tall tree!")
        say("A", "Oh no! My {obj:noun} is stuck!" if not w.ctx["obj"].plural else "Oh no! My {obj:noun} are stuck!",
            "How will we get {obj:it} down?", tone="sad")
        s("{A} jumped and jumped, but {obj:it} {obj:was} too high.", "{B} tried to reach, but {B:his} arms were too short.")
        fill(w, "worry", 0.55, 2)
        say("B", "I have an idea!", "Wait, I know what to do!")
        x = w.rng.random()
        if x < 0.35:
            s("{B} ran to get {P}, who brought a [tall|long] ladder.")
            s("{P} climbed up and got {obj:the} down.")
        elif x < 0.7:
            s("{B} found a long stick near {feat2}.")
            s("{A} held {B} up, and {B} [poked|pushed] {obj:the} with the stick.", "They used the stick to push {obj:the} free.")
            s("Down {obj:it} fell!")
        else:
            s("They waited. Then the wind blew again, and {obj:the} fell right into {A}'s hands!")
    elif kind == "animal_stuck":
        w.ctx["animal"] = Thing(w.pick(RESCUE))
        s("Suddenly they heard {sound}.", "Then {A} heard {sound} near {feat2}.")
        s("It was a little {animal:noun}! {animal:It} was stuck [in a hole|behind the fence|in a bush|between two rocks].")
        say("A", "Poor little {animal:noun}! We have to help {animal:it}.", "Look, {B}! It can't get out.", tone="kind")
        s("{A} [reached|pulled] but could not get {animal:it} out.", "{B} tried too, but it was no use.")
        fill(w, "worry", 0.55, 2)
        say("B", "Let's give {animal:it} some {food:noun}!", "Maybe we can make a path for it.", "Let's be very gentle.")
        s("They [moved the sticks and stones|dug the dirt away|held out some {food:noun}] [slowly|very slowly|carefully].",
          "Slowly, they made the hole bigger.")
        s("At last, the little {animal:noun} [came out|hopped free|was free]!", "Then, the little {animal:noun} wiggled out!")
        s("{animal:It} looked at {A} and {B} and then [ran|hopped|went] home.")
    elif kind == "broken":
        s("{A} and {B} built a [big|tall] [tower|castle|house] with {A}'s {obj}.", "{A} showed {B} {A:his} {obj}.")
        s("But then {B} [tripped|bumped {obj:it}], and {obj:the} broke!", "Crash! {obj:The} fell and broke.")
        s("{A} was [very|so] {sad}.", "{B} felt bad.")
        say("B", "I am sorry, {A}. I did not mean to.", "Oh no, {A}! I am so sorry.", tone="sad")
        say("A", "It's okay, {B}. Maybe we can fix {obj:it}.", "Let's try to fix {obj:it} together.", tone="kind")
        fill(w, "talk", 0.5, 1)
        s("They [got some glue and tape|found some string and glue] and worked [hard|for a long time].",
          "{P} gave them tape and glue, and they got to work.")
        s("It was not easy. The pieces kept falling off.")
        s("But they did not give up. At last, {obj:the} {obj:was} [fixed|as good as new]!",
          "At last, {obj:it} looked even better than before!")
    else:
        s("They wanted to get to {feat2}, but a [big puddle|muddy stream|fallen tree] was in the way.",
          "On the way to {feat2}, they found that [a log|a big puddle|a stream] blocked the path.")
        say("A", "How can we get across?", "We can't get past, {B}!", tone="")
        s("{B} tried to jump, but it was too far.", "{A} tried to climb, but it was too [wet|slippery].")
        fill(w, "worry", 0.5, 2)
        say("A", "I know! Let's make a bridge!", "Let's use some stones!", tone="happy")
        s("They carried [flat stones|long sticks|old boards] and put them in a row.",
          "Together they [rolled|pushed] big stones into a line.")
        s("It took a long time, but they made a little bridge.", "One by one, they walked across.")
    fill(w, "play", 0.8, 2)
    w.para()
    s("{A} and {B} [cheered|gave each other a high five|hugged].", "{A} smiled at {B}.")
    say("A", "We did it, {B}!", "We make a [good|great] team!", "Thank you, {B}!", tone="happy")
    if w.chance(0.5):
        s("They learned that when friends work together, they can [fix anything|solve big problems].",
          "{A} learned that it is good to keep trying.", "{A} and {B} were proud of what they had done.")


def trip(w: Writer) -> None:
    """A trip: going somewhere with the parent, sights, one event (rain, lost, a find, an animal), home.

    Example:
        >>> generate_story(0, 3, shape="trip").shape
        'trip'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    x = w.rng.random()
    if x < 0.5:
        say("P", "Let's go {place:to} today!", "Who wants to go {place:to}?", "Get your shoes on, we are going {place:to}!", tone="happy")
        say("A", "Yay! Can {B} come too?", "Yes! I want to go!", tone="happy")
    else:
        s("Today {A} and {B} were going {place:to} with {P}.", "{P} said that {A} and {B} could go {place:to}.")
        s("{A} was so {happy} that {A:he} [jumped up and down|could not stop smiling|ran to get {A:his} shoes].")
    s("They went {vehicle}.", "They went {vehicle}, and {A} [sang songs|counted the trees|waved at everyone] on the way.")
    fill(w, "walk", 0.3, 2)
    w.para()
    s("{place:At}, there was so much to see.", "When they got {place:to}, {A:ref} [gasped|smiled|ran ahead].",
      "{place:The} was [bigger|more beautiful|busier] than {A} had thought.")
    s("First they {play1}.", "{A} and {B} {play1}.", "They {play1} [right away|first of all|for a long time].")
    fill(w, "play", 0.5, 2)
    fill(w, "scene", 0.55, 2)
    w.para()
    x = w.rng.random()
    if x < 0.3 and w.ctx["place"].outdoor:
        s("Then dark clouds came, and it began to rain!", "Suddenly, big drops of rain began to fall.")
        say("B", "Quick, let's hide near {feat2}!", "Run, {A}!", tone="")
        s("They waited [under a tree|near {feat2}] until the rain stopped.", "They ran for cover and waited.")
        s("When the sun came out, there was a [big|bright] rainbow in the sky.")
        say("A", "Look, {B}! A rainbow!", "Wow! It is so pretty!", tone="happy")
    elif x < 0.55:
        lost = w.pick("BP")
        if lost == "B":
            s("Then {A} looked around. Where was {B}?", "Suddenly {B} was not there anymore!")
        else:
            s("Then {A} could not see {P} anywhere!", "Suddenly {A} looked up, and {P} was gone!")
        s("{A} felt {scared}.", "{A}'s heart beat fast.")
        say("A", "{B}! Where are you?" if lost == "B" else "{P}? Where are you?", tone="scared")
        s("Then {A} heard a voice.", "Then {A} saw [a hand waving|a {color} hat] near {feat3}.")
        say(lost, "I'm here, {A}!", "Here I am!", tone="happy")
        s("{A} ran and gave " + ("{B}" if lost == "B" else "{P}") + " a big hug.", "They held hands for the rest of the day.")
    elif x < 0.8:
        s("{A} found a [little|pretty|shiny] {obj2:noun} near {feat3}.", "Near {feat3}, {A} saw something shiny. It was {obj2:a}!")
        say("A", "Look what I found, {B}!", "Can I keep {obj2:it}, {P}?", tone="happy")
        say("P", "Yes, you can keep {obj2:it}.", "What a nice find, {A}!", tone="kind")
        s("{A} put {obj2:it} in {A:his} pocket to take home.")
    else:
        s("They met {animal:a} near {feat3}.", "A friendly {animal:noun} came up to them.")
        s("The {animal:noun} [looked at them|came closer|made a little sound].")
        say("B", "Hello, little {animal:noun}!", "It likes us, {A}!", tone="happy")
        s("{A} [smiled|laughed] and waved at the {animal:noun}.")
    if _extras(w) and w.chance(0.6):
        extra_cameo(w, w.pick(_extras(w)))
    fill(w, "play", 0.8, 2)
    w.para()
    s("At the end of the day, they went home.", "When the sun began to set, it was time to go home.")
    s("{A} was tired but {happy}.", "On the way home, {A} fell asleep.", "{A} and {B} talked about the trip all the way home.")
    if w.chance(0.6):
        say("A", "That was the best day ever!", "Can we come back tomorrow?", "Thank you, {P}!", tone="happy")
    if w.chance(0.4):
        s("That night, {A} dreamed about {place:the}.", "It was a day {A} would never forget.")


def lesson(w: Writer) -> None:
    """A lesson learned: sharing, telling the truth, listening, patience, kind words or trying new food.

    Example:
        >>> generate_story(0, 4, shape="lesson").shape
        'lesson'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    kind = w.pick(("share", "truth", "listen", "patience", "kind_words", "try_food"))
    if kind == "share":
        s("{A} had {obj:a} that everyone liked.", "{A} got {obj:a} as a present.")
        s("One day, {B} asked to play with {obj:it}.", "{B} wanted to play with {obj:the} too.")
        say("B", "Can I play with your {obj:noun}, {A}?", "Please, {A}, can I have a turn?", tone="")
        say("A", "No! {obj:It} {obj:is} mine!", "No, you can't!", tone="angry")
        s("{B} was {sad} and walked away.", "{B}'s face fell, and {B:he} went home.")
        w.para()
        s("{A} played with {obj:the} alone, but it was not fun.", "Soon {A} felt [lonely|bored].")
        fill(w, "alone", 0.45, 2)
        s("{A} told {P} what had happened.", "{P} saw that {A} was {sad}.")
        say("P", "Toys are more fun when we share them, {A}.", "How do you think {B} felt?", tone="kind")
        s("{A} thought about it.", "{A} knew {P} was right.")
        s("{A} ran to {B}'s house.", "The next day, {A} found {B} {place:at}.")
        say("A", "I am sorry, {B}. Do you want to play with my {obj:noun}?", "{B}, let's play with {obj:it} together!", tone="kind")
        say("B", "Yes, thank you, {A}!", "Okay! Thank you!", tone="happy")
        fill(w, "play", 0.8, 2)
        s("{A} learned that sharing makes everyone happy.", "{A} learned that it is more fun to share.")
    elif kind == "truth":
        s("{A} was playing with {obj:a} in the house.", "{A} was running inside, even though {P} had said not to.")
        s("Crash! {A} knocked over {P}'s [favorite cup|blue vase|big jar] and it broke.", "Oops! {A} bumped the table, and {P}'s [cup|vase|bowl] fell and broke.")
        s("{A} was {scared}.", "{A} did not know what to do.")
        s("When {P} came in, {A} said that {B} had done it.", "When {P} asked what happened, {A} [pointed at|blamed] {B}.")
        w.para()
        s("{P} was cross with {B}, and {B} was {sad}.", "{B} had to sit in {B:his} room, even though {B:he} did nothing wrong.")
        s("{A} felt a bad feeling inside.", "{A}'s tummy felt funny.")
        fill(w, "alone", 0.5, 2)
        s("That night, {A} could not sleep.", "All day, {A} could not stop thinking about it.")
        s("So {A} went to {P}.", "At last, {A} went to {P} and told the truth.")
        say("A", "I broke it, {P}. I am sorry. It was not {B}.", "It was me. I am sorry.", tone="sad")
        say("P", "Thank you for telling the truth, {A}.", "I am glad you told me, {A}.", tone="kind")
        s("{A} said sorry to {B} too.", "{A} gave {B} a big hug and said sorry.")
        s("{A} learned that telling the truth is always [best|right].", "{A} felt much better after telling the truth.")
    elif kind == "listen":
        say("P", "Stay close to me {place:at}, {A}.", "Don't go near {feat2}, {A}. It is not safe.", tone="")
        s("But {A} did not listen.", "{A} said yes, but {A:he} was not really listening.")
        s("{A} and {B} went {place:to}.")
        fill(w, "play", 0.4, 2)
        s("{A} ran to {feat2} all alone.", "{A} went off to look at {feat2}.")
        s("Then {A} [slipped and fell|got lost|got all wet and muddy].", "Soon {A} could not find the way back.")
        s("{A} was {scared} and began to cry.", "{A} felt very {scared}.")
        say("A", "{B}! {P}! Help!", "Help! Where is everyone?", tone="scared")
        s("{B} heard {A} and ran to get {P}.", "{B} found {A} and took {A:his} hand.")
        say("P", "You must listen when I tell you something, {A}. It keeps you safe.", "Are you okay, {A}?", tone="kind")
        s("{A} nodded.", "{A} hugged {P}.")
        say("A", "I am sorry. I will listen next time.", "I will stay close from now on.", tone="sad")
        s("{A} learned to listen to {P}.", "From then on, {A} always listened.")
    elif kind == "patience":
        s("{A} and {B} were making {food:a} with {P}.", "{P} was baking {food} for {A} and {B}.")
        say("P", "We have to wait until {food:it} {food:is} ready.", "Be patient. {food:It} {food:is} not ready yet.", tone="")
        s("But {A} did not want to wait.", "{A} wanted {food:the} right now.")
        say("A", "But I am so hungry!", "Can I have some now? Please?", tone="")
        s("{A} [grabbed|took] some {food:noun} before {food:it} {food:was} ready.", "When {P} was not looking, {A} took a bite.")
        s("It was [too hot|not good|still sticky] and {A} made a face.", "It did not taste good at all.")
        fill(w, "talk", 0.6, 1)
        s("{B} waited, and soon {food:the} {food:was} ready.", "Later, when {food:it} {food:was} ready, it was [yummy|perfect|so good].")
        say("B", "Mmm, this is so good, {A}!", "See, {A}? It was worth the wait.", tone="happy")
        s("{A} learned that good things come to those who wait.", "{A} learned to be patient.")
    elif kind == "kind_words":
        s("{B} made a picture of {animal2:a} and showed it to {A}.", "{B} sang a song for {A}.")
        s("{A} laughed and said it was silly.", "{A} said it was [not good|ugly|boring].")
        s("{B} was [very {sad}|hurt] and ran away.", "{B}'s eyes filled with tears.")
        w.para()
        fill(w, "alone", 0.4, 2)
        s("{A} felt bad.", "{A} knew {A:he} had been unkind.")
        say("P", "Words can hurt, {A}. How would you feel?", "Maybe you should say sorry to {B}.", tone="kind")
        s("{A} went to find {B}.", "{A} [found|saw] {B} near {feat}.")
        say("A", "I am sorry, {B}. Your [picture|song] is really [nice|good].", "I was wrong, {B}. I'm sorry.", tone="kind")
        say("B", "Thank you, {A}.", "It's okay, {A}. Let's be friends.", tone="happy")
        fill(w, "play", 0.8, 2)
        s("{A} learned that kind words make friends happy.", "{A} learned to think before speaking.")
    else:
        s("{P} made {food} for dinner.", "At lunch, there was {food} on {A}'s plate.")
        say("A", "I don't like {food}!", "Yuck! I don't want {food:it}!", tone="angry")
        say("P", "Have you ever tried {food:it}, {A}?", "Just try one bite, {A}.", tone="kind")
        s("{A} had never tried {food}.", "{A} shook {A:his} head.")
        s("Then {B} took a big bite.", "{B} ate some and smiled.")
        say("B", "Mmm! It is [so good|yummy]!", "{A}, you should try {food:it}!", tone="happy")
        fill(w, "talk", 0.5, 1)
        s("So {A} tried a little bit.", "{A} took a tiny bite.")
        s("{A}'s eyes went wide. It was [good|yummy|really tasty]!", "It was not bad at all. In fact, it was [good|yummy]!")
        say("A", "Can I have some more?", "I like {food:it}!", tone="happy")
        s("{A} learned that it is good to try new things.", "{A} learned not to say no before trying.")


def surprise(w: Writer) -> None:
    """A surprise: a secret birthday party or gift, a near miss, sometimes a mishap, then \"Surprise!\".

    Example:
        >>> generate_story(0, 5, shape="surprise").shape
        'surprise'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    who = "C" if w.has("C") and w.ctx["C"].role != "pet" and w.chance(0.4) else "P"
    w.ctx["S"] = w.ctx[who]
    occasion = w.pick(("birthday", "party", "gift"))
    w.ctx["occ"] = {"birthday": "a birthday party", "party": "a big party", "gift": "a special gift"}[occasion]
    s("It was almost {S}'s birthday.", "{S} had been [very busy|very tired|working hard] all week.", "Tomorrow was a special day for {S}.")
    s("{A} and {B} wanted to make a surprise for {S}.", "{A} had an idea: a surprise for {S}!")
    say("A", "Let's make {occ} for {S}!", "{B}, let's [plan|make] a surprise!", tone="happy")
    say("B", "Yes! But we must keep it secret.", "Good idea, {A}! Shh!", tone="happy")
    w.para()
    s("They made a card with {color} [paper|crayons] and drew {animals} on it.", "First, they made a big card.")
    s("Then they baked {food:a} with lots of [sugar|love|sprinkles].", "Then they got {food} ready.", "They [put up|blew up] {color} balloons.")
    fill(w, "talk", 0.5, 1)
    if w.chance(0.5):
        s("Then they heard footsteps. {S} was coming!", "Suddenly, the door opened!")
        say("B", "Quick, hide!", "Shh! Hide the card!", tone="")
        s("{A} hid the card behind {A:his} back.", "They hid behind the [couch|door|curtains].")
        s("But {S} only came to get a cup of water. Phew!", "{S} did not see a thing.")
    if w.chance(0.35):
        s("Then a big [dog|cat] [ran|came] in and knocked the {food:noun} to the floor!", "Oh no! The {food:noun} fell on the floor!")
        s("{A} and {B} looked at each other.", "For a moment, {A} wanted to cry.")
        say("A", "What do we do now?", "Our surprise is ruined!", tone="sad")
        say("B", "It's okay. We still have the card!", "We can make something new!", tone="kind")
    w.para()
    s("When {S} came in, {A} and {B} jumped out.", "At last, {S} walked into the room.")
    say("A", "Surprise!", "Happy birthday, {S}!", "Surprise, {S}!", tone="happy")
    s("{S} was so surprised!", "{S} [gasped|laughed|clapped] and [hugged them|smiled big].")
    say(who, "This is the best surprise ever! Thank you, {A} and {B}!", "Thank you! I love it!", tone="happy")
    fill(w, "talk", 0.85, 1)
    s("It was a day full of [love|laughs|joy].", "{A} and {B} felt {happy}, because making others happy feels good.")


def brave(w: Writer) -> None:
    """Being brave: a fear (dark, water, slide, dog, thunder, school) and how the hero faces it.

    Example:
        >>> generate_story(0, 6, shape="brave").shape
        'brave'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    fear = w.ctx["fear"]
    intro = {
        "dark": ("{A} was afraid of the dark.", "Every night, {A} was {scared} when the lights went out."),
        "water": ("{A} was afraid of the water {place:at}.", "{A} did not like deep water."),
        "slide": ("{A} was afraid of the big slide.", "The big slide looked so tall to {A}."),
        "dog": ("{A} was afraid of big dogs.", "There was a big dog on {A}'s street, and {A} was {scared} of it."),
        "thunder": ("{A} was afraid of thunder.", "When it stormed, {A} hid under the blanket."),
        "school": ("Today was {A}'s first day at a new school.", "{A} was {scared} to go to school for the first time."),
    }[fear]
    s(*intro)
    s("{A:Ref} did not tell anyone.", "{A:Ref} tried to hide it.", "{A:Ref} felt {scared} just thinking about it.")
    w.para()
    if fear in ("dark", "thunder"):
        s("One night, [a storm came|the lights went out|the wind howled].", "That night, {A} heard a loud noise.")
        say("A", "{P}! I am {scared}!", "{B}, are you awake?", tone="scared")
        s("{B} came and sat with {A}.", "{P} came in with a [flashlight|candle|soft blanket].")
        say("B", "The dark is just the day with the lights off, {A}.", "It's just noise, {A}. We are safe inside.", tone="kind")
        fill(w, "talk", 0.5, 1)
        s("{A} took a deep breath.", "{A} held {B}'s hand.")
        s("They looked out the window and saw the [stars|moon|rain].", "Then {A} saw that the room was just the same as in the day.")
    elif fear == "dog":
        s("One day, {A} and {B} had to walk past the big dog.", "One day, the big dog came up to {A} and {B}.")
        s("{A} wanted to run away.", "{A}'s legs felt like jelly.")
        say("B", "Don't run, {A}. Stand still and let it sniff your hand.", "It is just saying hello, {A}.", tone="kind")
        fill(w, "worry", 0.5, 2)
        s("{A} held out {A:his} hand [slowly|very slowly].", "{A} did not move.")
        s("The dog sniffed it and wagged its tail.", "The big dog licked {A}'s hand!")
        say("A", "It likes me!", "It tickles!", tone="happy")
    elif fear == "school":
        s("{A} held {P}'s hand [very|so] tight.", "{A} did not want to go inside.")
        say("P", "You will make new friends, {A}.", "Be brave, {A}. I will be here after school.", tone="kind")
        s("Inside, {Bkind:a} waved at {A}. It was {B}.", "{A} sat next to {Bkind:a} named {B}.")
        say("B", "Hi! Do you want to sit with me?", "Hi {A}! I like your [shoes|bag|hat].", tone="happy")
        fill(w, "play", 0.55, 2)
        s("By lunch time, {A} was not {scared} anymore.", "The day went by fast.")
    else:
        s("{A} and {B} went {place:to}.", "{B} [went down|jumped in] first.")
        say("B", "Come on, {A}! It's fun!", "You can do it, {A}!", tone="happy")
        s("{A} looked down. It looked so [big|deep|far].", "{A} stood there for a long time.")
        fill(w, "worry", 0.5, 2)
        say("P", "Being brave means doing it even if you are {scared}.", "I'll be right here, {A}.", tone="kind")
        s("{A} counted to three and [went|jumped].", "{A} closed {A:his} eyes and [went|jumped].")
        s("Whoosh! It was fun!", "It was not so bad after all. It was fun!")
        say("A", "Again! Let's do it again!", "I did it, {B}!", tone="happy")
    w.para()
    fill(w, "talk" if fear in ("dark", "thunder", "dog") else "play", 0.8, 1)
    s("{A} was proud of {A:self}.", "{A} felt brave and {happy}.")
    if w.chance(0.7):
        s("{A} learned that being brave is not about never being {scared}.", "{A} was not {scared} anymore.",
          "After that day, {A} was a little braver.")


def helping(w: Writer) -> None:
    """Helping: a hurt bird, a lost duckling, a neighbour's bags or a dirty park.

    Example:
        >>> generate_story(0, 7, shape="helping").shape
        'helping'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    kind = w.pick(("bird", "duckling", "neighbor", "clean"))
    if kind == "bird":
        s("One {time}, {A} and {B} found a little bird {place:at}.", "Near {feat}, {A} found a little bird on the ground.")
        s("The bird had a hurt wing and could not fly.", "The bird's wing was hurt.")
        say("A", "Poor little bird! We must help it.", "Look, {B}! The bird can't fly.", tone="kind")
        s("They made a soft bed in a box.", "{B} got a box and a soft cloth.")
        s("They gave it water and some seeds.", "Every day, they fed the bird and kept it warm.")
        fill(w, "talk", 0.55, 1)
        s("After some days, the wing was better.", "Soon the bird began to hop and flap.")
        s("One morning, the bird flew up into the sky!", "Then one day, the bird flew away.")
        say("B", "Goodbye, little bird!", "Look, {A}! It can fly!", tone="happy")
    elif kind == "duckling":
        s("{A} and {B} saw a little duckling all alone {place:at}.", "A little duckling was crying near {feat}.")
        say("A", "Where is your mom, little duck?", "It's lost, {B}!", tone="kind")
        s("They looked around for the mother duck.", "They walked along slowly, with the duckling behind them.")
        fill(w, "search", 0.6, 2)
        s("At last they heard a loud quack.", "Then they saw a big duck near {feat3}.")
        s("The duckling ran to its mother.", "The mother duck was so happy to see her baby.")
        say("B", "We did it, {A}!", "They are together again!", tone="happy")
    elif kind == "neighbor":
        old = "the old woman next door" if w.chance(0.5) else "the old man next door"
        w.ctx["old"] = old
        s("{A} saw {old} carrying heavy bags.", "{old} was trying to [carry|lift] a big box.")
        say("A", "Can we help you?", "Let me help, please!", tone="kind")
        s("{A} and {B} carried the bags to the door.", "{A} took one side and {B} took the other.")
        s("It was hard work, but they did it.", "The bags were heavy, but they did not give up.")
        fill(w, "talk", 0.55, 1)
        s("{old} smiled and gave them {food}.", "To say thank you, {old} gave them {food}.")
        say("A", "Thank you! This is so good!", "You are welcome!", tone="happy")
    else:
        s("{A} and {B} went {place:to} and saw trash everywhere.", "{place:At}, {A} saw paper and cans on the ground.")
        say("A", "This is not nice. The animals could get hurt.", "Let's clean it up, {B}!", tone="")
        s("They got two big bags.", "{P} gave them gloves and bags.")
        s("They picked up paper, cans and bottles.", "They worked all {time}.")
        fill(w, "play", 0.6, 2)
        s("Soon {place:the} looked clean and [nice|pretty].", "When they were done, {place:the} looked beautiful.")
        s("{animal:A} came out and looked around.", "The {animals} came back.")
    if _extras(w) and w.chance(0.5):
        extra_cameo(w, w.pick(_extras(w)))
    fill(w, "scene", 0.85, 2)
    w.para()
    s("{A} felt warm inside.", "{A} and {B} felt {happy}.", "It felt good to help.")
    if w.chance(0.6):
        s("Helping others made {A} happy.", "{A} learned that even small hands can do big things.",
          "{A} and {B} decided to help whenever they could.")


def contest(w: Writer) -> None:
    """A contest or game: a race, a building contest or hide and seek.

    Example:
        >>> generate_story(0, 8, shape="contest").shape
        'contest'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    kind = w.ctx["contest"]
    if kind == "race":
        s("{A} and {B} wanted to have a race {place:at}.", "There was a race {place:at}, and {A} wanted to win.")
        say("A", "I am the fastest! I will win!", "Let's race to {feat2}!", tone="happy")
        say("B", "Ready, set, go!", "Okay! One, two, three, go!")
        s("They ran as fast as they could.", "Off they went!")
        fill(w, "scene", 0.4, 2)
        s("{A} was in front. Then {A} heard a cry.", "Then {B} tripped and fell.")
        s("{A} stopped and looked back. {B} was on the ground.", "{A} could win, but {B} was hurt.")
        s("{A} ran back to help {B}.", "{A} did not keep running. {A:He} went back to {B}.")
        say("A", "Are you okay, {B}?", "Let me help you up, {B}.", tone="kind")
        s("They walked to the end together.", "{A} and {B} crossed the line together, hand in hand.")
        say("B", "You could have won, {A}.", "Thank you for coming back, {A}.", tone="happy")
        say("A", "Being a good friend is better than winning.", "It's more fun to finish together.", tone="kind")
    elif kind == "build":
        s("There was a contest to build the best {thing} {place:at}.", "{A} and {B} wanted to make the best {thing} ever.")
        s("{A} wanted to do it alone.", "{A} and {B} started to work.")
        s("{A}'s {thing} kept falling apart.", "{B} had a good idea, but {A} did not listen.")
        fill(w, "worry", 0.45, 2)
        say("B", "Maybe we can build it together, {A}.", "What if we put the big pieces at the bottom?", tone="kind")
        s("{A} thought about it and said yes.", "They tried {B}'s idea.")
        s("Together they made something [tall|big|beautiful].", "It was the biggest one of all!")
        fill(w, "play", 0.65, 2)
        s("They [won a little prize|did not win, but they had fun|got a gold star].")
        say("A", "We did it together, {B}!", "Your idea was great, {B}!", tone="happy")
    else:
        s("{A}, {B} and their friends played hide and seek {place:at}.", "{A} and {B} played hide and seek.")
        s("{B} counted to ten.", "{B} closed {B:his} eyes and counted.")
        say("B", "Ready or not, here I come!")
        s("{A} hid [near|behind] {feat2}.", "{A} found the best hiding spot near {feat2}.")
        fill(w, "scene", 0.5, 2)
        s("{B} looked everywhere, but could not find {A}.", "{B} looked and looked.")
        say("B", "Where are you, {A}?", "I give up, {A}!", tone="")
        s("{A} waited so long that {A:he} [fell asleep|began to giggle].", "{A} tried not to laugh.")
        s("Then {A} [sneezed|laughed], and {B} found {A:him}!", "At last, {A} jumped out.")
        say("A", "Here I am!", "Boo!", tone="happy")
        s("They both laughed and laughed.", "{B} laughed so hard {B:he} fell down.")
    fill(w, "play", 0.85, 2)
    w.para()
    s("It was a fun day for {A} and {B}.", "{A} and {B} went home with big smiles.")


def making(w: Writer) -> None:
    """Making something: baking, building a fort, planting a garden or painting.

    Example:
        >>> generate_story(0, 9, shape="making").shape
        'making'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    kind = w.pick(("bake", "build", "garden", "paint"))
    if kind == "bake":
        s("{A} wanted to make {food} with {P}.", "On {day}, {A} and {B} helped {P} make {food}.")
        say("P", "First, we need flour, eggs and milk.", "Wash your hands first, {A}.", tone="")
        s("{A} poured the flour, and {B} mixed it.", "{A} cracked the eggs, and {B} stirred.")
        s("Some flour went on {A}'s nose! Everyone laughed.", "Oops! {B} spilled some milk.")
        fill(w, "talk", 0.5, 1)
        s("They put it in the oven and waited.", "The kitchen smelled so good.")
        s("At last the {food:noun} {food:was} ready.", "Ding! The oven bell rang.")
        say("A", "Mmm! We made it ourselves!", "Can we eat it now?", tone="happy")
        s("They shared the {food:noun} with everyone.", "{A} gave the first piece to {B}.")
    elif kind == "build":
        s("{A} and {B} wanted to build a [fort|tree house|tent|boat].", "{A} had a big idea: a secret fort!")
        say("A", "Let's build a fort, {B}!", "We need boxes and blankets!", tone="happy")
        s("They got boxes, blankets and pillows.", "They found sticks, boxes and an old sheet.")
        s("The first time, it fell down.", "The roof kept falling in.")
        fill(w, "worry", 0.45, 2)
        say("B", "Let's try again!", "Maybe we need more pillows.", tone="")
        s("They tried again, and this time it stayed up!", "At last it was done.")
        s("Inside, it was [dark and cozy|warm and quiet].", "They crawled inside with {A}'s {obj} and a flashlight.")
        fill(w, "talk", 0.7, 1)
        say("A", "This is our secret place!", "Nobody can come in without the password!", tone="happy")
    elif kind == "garden":
        s("{P} gave {A} some seeds.", "{A} and {B} wanted to plant a garden.")
        s("They dug little holes and put the seeds in.", "{A} dug, and {B} put in the seeds.")
        s("{A} watered them every day.", "Every morning, {A} looked at the dirt.")
        say("A", "When will they grow?", "Why is nothing happening?", tone="")
        say("P", "Be patient, {A}. Good things take time.", "Plants grow slowly, {A}.", tone="kind")
        fill(w, "scene", 0.55, 2)
        s("One day, {A} saw a tiny green leaf!", "After many days, little green shoots came up.")
        say("A", "Look, {B}! It's growing!", "{B}! Come and see!", tone="happy")
        s("By {season}, the garden was full of [flowers|carrots|tomatoes|sunflowers].", "Soon there were [flowers|beans] everywhere.")
    else:
        s("{A} wanted to paint a picture for {P}.", "{A} and {B} got out paper and paints.")
        s("{A} painted {animal2:a}, and {B} painted a big sun.", "{A} used lots of {color} paint.")
        s("Then {B} spilled the water on {A}'s picture!", "Oops! A big drop of paint fell on the paper.")
        s("{A} was {sad}.", "{A} almost cried.")
        say("B", "Wait! We can make it into [a flower|a cloud|a bird]!", "I'm sorry, {A}. Let's fix it.", tone="kind")
        s("They turned the spot into something new.", "They painted around the spot.")
        fill(w, "talk", 0.6, 1)
        s("The picture was even better than before!", "It was the prettiest picture ever.")
        s("{P} put it on the wall.", "{A} gave it to {P}, who smiled.")
    fill(w, "talk", 0.8, 1)
    w.para()
    s("{A} was proud of what they had made.", "{A} and {B} smiled at each other.")
    if w.chance(0.4):
        s("{A} learned that making things with friends is the best.", "{A} could not wait to make something new.")


def weather_day(w: Writer) -> None:
    """A weather day: a snow day outside or a rainy day inside.

    Example:
        >>> generate_story(0, 10, shape="weather_day").shape
        'weather_day'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    snowy = w.ctx["snowy"]
    if snowy:
        s("{A} woke up and looked out the window. Everything was white!", "It snowed all night.")
        say("A", "It snowed! {B}, it snowed!", "Snow! Can we go out, {P}?", tone="happy")
        s("{A} put on {A:his} coat, hat and boots.", "{A} and {B} got dressed very fast.")
        w.para()
        w.ctx["_plays"] = [p for p in w.ctx["_plays"] if "snow" not in p and "cocoa" not in p]
        s("They made a big snowman with a [carrot nose|{color} scarf|funny hat].", "They rolled a big ball of snow.")
        s("They made snow angels.", "{B} threw a snowball at {A}, and {A} threw one back!")
        fill(w, "play", 0.55, 2)
        s("Soon their hands were cold.", "{A}'s nose was red from the cold.")
        say("P", "Come inside for hot cocoa!", "Time to warm up, you two!", tone="kind")
        s("They drank hot cocoa by the window.", "They sat by the fire and watched the snow fall.")
    else:
        s("It was raining, and {A} could not go outside.", "Rain was falling all day.")
        say("A", "There is nothing to do!", "I am so bored, {P}.", tone="sad")
        say("P", "Why don't you and {B} make something?", "Let's find a game to play inside.", tone="kind")
        w.para()
        s("{A} and {B} built a fort with pillows.", "They played {game} in the house.")
        s("They pretended to be [pirates|explorers|bears in a cave].", "They read a book about {animals2}.")
        fill(w, "talk", 0.55, 1)
        s("When the rain stopped, they ran outside and jumped in the puddles.", "Later the sun came out.")
        say("B", "Look, {A}! A rainbow!", "Puddles! Let's jump!", tone="happy")
        s("Splash! They got wet, but they did not care.", "They laughed and jumped in every puddle.")
    if _extras(w) and w.chance(0.5):
        extra_cameo(w, w.pick(_extras(w)))
    fill(w, "talk", 0.8, 1)
    w.para()
    s("It was a [great|wonderful|fun] day after all.", "{A} decided that " + ("snowy" if snowy else "rainy") + " days are the best.")


def magic_find(w: Writer) -> None:
    """A magic find: a glowing object grants a wish (fly, shrink, talk to animals, food), maybe a dream.

    Example:
        >>> generate_story(0, 11, shape="magic_find").shape
        'magic_find'
    """
    s, say = w.sentence, w.say  # shorthands of the story language below
    w.ctx["mobj"] = Thing(w.pick(("stone", "shell", "key", "feather", "coin", "bell")), w.pick(("shiny", "tiny", "strange", "golden", "sparkly", "old")))
    s("One day {place:at}, {A} found {mobj:a}.", "Near {feat}, {A} saw {mobj:a}.")
    s("When {A} picked it up, it began to [glow|hum|sparkle].", "It was warm in {A}'s hand.")
    say("A", "Look, {B}! It's magic!", "{B}, come see this!", tone="happy")
    say("B", "Make a wish, {A}!", "Maybe it can grant wishes!", tone="happy")
    w.para()
    wish = w.pick(("fly", "tiny", "talk", "food"))
    if wish == "fly":
        s("{A} wished to fly.", "{A} closed {A:his} eyes and wished to fly like a bird.")
        s("Whoosh! {A} and {B} floated up into the sky!", "Up, up they went, over {place:the}.")
        s("They flew over the houses and the trees.", "They saw {animals} far below.")
    elif wish == "tiny":
        s("{A} wished to be as small as a bug.", "{A} wished to see the world like an ant.")
        s("Pop! {A} and {B} were tiny!", "Suddenly, the grass looked like a forest.")
        s("A ladybug was as big as a car.", "They rode on the back of a [beetle|bee|butterfly].")
    elif wish == "talk":
        s("{A} wished to talk to animals.", "{A} wished {A:he} could understand the {animals}.")
        s("Then {animal:a} said hello!", "The {animals} began to talk.")
        say("A", "Hello! What do you like to do?", "Wow! You can talk!", tone="happy")
        s("The {animal:noun} told them about its home near {feat2}.", "The {animal:noun} showed them its secret place.")
    else:
        s("{A} wished for a mountain of {food}.", "{A} wished for all the {food} in the world.")
        s("Poof! {food:The} {food:was} everywhere!", "Suddenly, there {food:was} {food} all around them.")
        s("They ate and ate, until their tummies hurt.", "Soon they did not want any more.")
        say("B", "Maybe that was too much, {A}.", "I think I ate too much!", tone="")
    fill(w, "play", 0.6, 2)
    w.para()
    if w.chance(0.4):
        s("Then {A} heard a voice: \"{A}, wake up!\" It was {P}.", "Then {A} opened {A:his} eyes. It had all been a dream!")
        s("But in {A}'s hand was the {mobj:noun}.", "{A} smiled, because it had been a wonderful dream.")
    else:
        s("When the sun went down, the magic stopped.", "Then the {mobj:noun} stopped glowing.")
        s("{A} put the {mobj:noun} in a safe place.", "{A} and {B} promised to keep it a secret.")
    say("A", "What a day, {B}!", "Let's make another wish tomorrow!", "That was amazing!", tone="happy")
    if w.chance(0.4):
        s("{A} learned that the best magic is a good friend.", "{A} knew that {A:he} would never forget that day.")


def _prepare_brave(w: Writer) -> None:
    fear = w.ctx["fear"] = w.pick(("dark", "water", "slide", "dog", "thunder", "school"))
    if fear == "school":
        set_place(w, "school")
    elif fear == "water":
        set_place(w, w.pick(("beach", "lake", "river")))
    elif fear == "slide":
        set_place(w, w.pick(("park", "playground")))


def _prepare_weather(w: Writer) -> None:
    w.ctx["snowy"] = w.chance(0.5)
    if w.ctx["snowy"]:
        set_place(w, "snowy hill")
        w.ctx.update(season="winter", weather="snowy")
    else:
        w.ctx["weather"] = "rainy"


def _prepare_contest(w: Writer) -> None:
    kind = w.ctx["contest"] = w.pick(("race", "build", "hide"))
    if kind == "build":
        thing, place = w.pick((("sand castle", "beach"), ("snowman", "snowy hill"), ("block tower", "school"),
                               ("kite", "meadow"), ("tower of sticks", "forest"), ("scarecrow", "farm"),
                               ("paper boat", "lake"), ("sand castle", "island")))
        w.ctx["thing"] = thing
        set_place(w, place)
    elif kind == "race" and not w.ctx["place"].outdoor:
        set_place(w, w.pick(("park", "meadow", "beach", "playground")))


def _prepare_baking(w: Writer) -> None:
    name, kind = w.pick(BAKED)
    w.ctx["food"] = Thing(name, plural=kind == "p", mass=kind == "m")


# Run before the opening, so that the opening already names the right place.
PREPARE = {"brave": _prepare_brave, "weather_day": _prepare_weather, "making": _prepare_baking,
           "lesson": _prepare_baking, "surprise": _prepare_baking, "contest": _prepare_contest}
# Shapes in which the hero meets B during the story (no introduction up front).
MEET_B = {"new_friend"}

SHAPES = {
    "lost_object": lost_object, "new_friend": new_friend, "problem_solved": problem_solved, "trip": trip,
    "lesson": lesson, "surprise": surprise, "brave": brave, "helping": helping, "contest": contest,
    "making": making, "weather_day": weather_day, "magic_find": magic_find,
}

# ---------------------------------------------------------------------------
# endings


def ending(w: Writer) -> None:
    """A closing sentence (not every story gets one: many shapes end well already).

    Example:
        >>> w = demo_writer(); ending(w); w.words >= 0
        True
    """
    if w.chance(0.6):
        w.sentence("That night, {A} fell asleep with a [big|happy] smile.", "It was the best day ever.",
            "And from then on, {A} and {B} were always together.", "{A} would always remember that day.",
            "The end.", "{A} hugged {B}. It had been a [good|great|long] day.",
            "{P} was very proud of {A}.", "{A} and {B} could not wait for tomorrow.",
            "{A} smiled. Some days are just perfect.", "{B} waved goodbye, and {A} waved back.")


# ---------------------------------------------------------------------------
# the story


_WORD = re.compile(r"\S+")


def generate_story(seed: int, index: int, min_words: int = 80, max_words: int = 300, n_named: int = 0,
                   shape: str = "") -> Story:
    """Story number ``index`` of the stream ``seed``; the same arguments always give the same story.

    ``shape`` forces one of :data:`SHAPES` ("" draws it uniformly).
    ``n_named`` fixes the number of named characters (2..4); 0 draws it
    (2: 45%, 3: 35%, 4: 20%). The length target is drawn between
    ``min_words`` and ``max_words`` (mode near the lower third, like
    TinyStories); drafts outside the bounds or in which a named character is
    mentioned fewer than twice are redrawn.

    Example:
        >>> s = generate_story(1, 0)
        >>> all(s.text.count(n) >= 2 for n in s.names)
        True
    """
    rng = random.Random(f"story:{seed}:{index}")
    lo, hi = min_words, max_words
    forced = shape
    if forced and forced not in SHAPES:
        raise ValueError(f"unknown story shape '{forced}'; choose one of {', '.join(SHAPES)}")
    for attempt in range(50):
        k = n_named or (2 if rng.random() < 0.45 else 3 if rng.random() < 0.64 else 4)
        target = int(rng.triangular(lo, hi, lo + (hi - lo) * 0.3))
        w = Writer(rng, target)
        _cast(w, rng, k)
        shape = w.pick(tuple(SHAPES))
        if forced:
            shape = forced
        if shape in PREPARE:
            PREPARE[shape](w)
        opening(w)
        if shape not in MEET_B and not (shape == "brave" and w.ctx["fear"] == "school"):
            introduce_b(w)
        introduce_extras(w)
        w.para()
        SHAPES[shape](w)
        # mention extras near the end (a second mention guaranteed for each)
        extras_end(w)
        ending(w)
        text = w.text()
        n_words = len(_WORD.findall(text))
        names = tuple(w.ctx[s].name for s in ("A", "B", "C", "D") if w.ctx.get(s) is not None)
        if lo <= n_words <= hi and all(len(re.findall(rf"\b{n}\b", text)) >= 2 for n in names):
            return Story(text, names, shape)
    raise ValueError(f"could not write a story of {min_words}..{max_words} words (seed={seed}, index={index}); "
                     "widen the word range")

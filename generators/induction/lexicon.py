"""The words the story generator draws from: places, things, animals, food, feelings.

Everything here is plain data. A place knows what is there (features), which
animals live there and what children do there, so that the sentences that use
it stay coherent ("they fed the ducks at the lake", never "at the library").
Noun phrases are :class:`Thing` objects that know their article and pronoun
through format specs, e.g. ``"{obj:a}"`` -> ``"an old kite"``,
``"{obj:it}"`` -> ``"it"`` (``"them"`` for plurals).

Example:
    >>> ball = Thing("ball", "red")
    >>> f"{ball:a} and {ball:the}; {ball:It} {ball:was} gone."
    'a red ball and the red ball; It was gone.'
    >>> f"{Thing('cookies', plural=True):a}"
    'some cookies'
"""

from __future__ import annotations

from dataclasses import dataclass


class Thing:
    """A noun phrase with an optional adjective that formats itself.

    Format specs: ``""`` (bare phrase), ``a``, ``A``, ``the``, ``The``,
    ``noun`` (without adjective), ``it``, ``It``, ``its``, ``is``, ``was``,
    ``has``, ``this``, ``that``. ``mass`` nouns ("soup") take "some" but stay singular.

    Example:
        >>> f"{Thing('apple', 'green'):a}, {Thing('shells', plural=True):it}"
        'a green apple, them'
    """

    __slots__ = ("noun", "adj", "plural", "mass", "base")

    def __init__(self, noun: str, adj: str = "", plural: bool = False, mass: bool = False):
        self.noun, self.adj, self.plural, self.mass = noun, adj, plural, mass
        self.base = f"{adj} {noun}" if adj else noun

    def __str__(self) -> str:
        return self.base

    def __format__(self, spec: str) -> str:
        if not spec:
            return self.base
        if spec in ("a", "A"):
            if self.plural or self.mass:
                art = "some"
            else:
                art = "an" if self.base[0] in "aeiou" else "a"
            return f"{art.capitalize() if spec == 'A' else art} {self.base}"
        if spec == "the":
            return "the " + self.base
        if spec == "The":
            return "The " + self.base
        if spec == "noun":
            return self.noun
        p = self.plural
        return {
            "it": "them" if p else "it", "It": "They" if p else "It", "its": "their" if p else "its",
            "that": "those" if p else "that",
            "they": "they" if p else "it", "is": "are" if p else "is", "was": "were" if p else "was",
            "has": "have" if p else "has", "this": "these" if p else "this",
        }[spec]


@dataclass(frozen=True)
class Place:
    """A setting. ``prep`` is how one is there ("at the park", "in the forest").

    ``features``: things one can see or hide behind there ("the big slide");
    ``animals``: species found there; ``play``: past-tense things children do
    there ("fed the ducks"); ``outdoor``: weather sentences make sense.
    Format specs: ``at``/``At`` ("at the park"), ``to``, ``the``/``The``.

    Example:
        >>> f"They went {PLACES[0]:to} and played {PLACES[0]:at}."
        'They went to the park and played at the park.'
    """

    noun: str
    prep: str
    features: tuple[str, ...]
    animals: tuple[str, ...]
    play: tuple[str, ...]
    outdoor: bool = True

    def __format__(self, spec: str) -> str:
        if spec == "at":
            return f"{self.prep} the {self.noun}"
        if spec == "At":
            return f"{self.prep.capitalize()} the {self.noun}"
        if spec == "The":
            return f"The {self.noun}"
        if spec == "to":
            return f"to the {self.noun}"
        if spec == "the":
            return f"the {self.noun}"
        return self.noun


PLACES: tuple[Place, ...] = (
    Place("park", "at", ("the big slide", "the swings", "the old oak tree", "the duck pond", "the sandbox",
                         "the green bench", "the flower beds", "the little bridge"),
          ("duck", "squirrel", "puppy", "pigeon", "butterfly", "robin"),
          ("went down the slide", "played on the swings", "ran across the grass", "built a castle in the sandbox",
           "rolled down the hill", "fed the ducks", "played tag under the trees")),
    Place("beach", "at", ("the warm sand", "a big rock", "the tide pools", "the old pier", "the sand dunes",
                          "the lifeguard tower", "the beach blanket"),
          ("crab", "seagull", "fish", "starfish", "turtle", "dolphin"),
          ("built a sand castle", "splashed in the waves", "looked for shells", "dug a deep hole",
           "ran along the shore", "jumped over the little waves", "had a picnic on the sand")),
    Place("forest", "in", ("a tall pine tree", "a mossy log", "the little stream", "a hollow tree",
                           "the berry bushes", "a pile of leaves", "a big gray stone"),
          ("owl", "fox", "deer", "rabbit", "squirrel", "hedgehog", "woodpecker", "bear cub"),
          ("climbed over logs", "picked berries", "listened to the birds", "looked for pinecones",
           "followed a little path", "jumped across the stream", "built a tiny house of sticks")),
    Place("farm", "on", ("the red barn", "the hay bales", "the apple trees", "the pig pen", "the big tractor",
                         "the chicken coop", "the wooden gate"),
          ("cow", "pig", "goat", "hen", "horse", "sheep", "lamb", "chick", "pony"),
          ("fed the goats", "rode on the hay cart", "collected eggs", "jumped in the hay", "picked apples",
           "watched the cows eat", "helped brush the pony")),
    Place("garden", "in", ("the vegetable patch", "the rose bushes", "the little pond", "the garden shed",
                           "the bird bath", "the tomato plants", "the tall sunflowers"),
          ("bee", "ladybug", "snail", "butterfly", "robin", "frog", "worm"),
          ("watered the flowers", "dug in the dirt", "picked carrots", "chased butterflies", "planted seeds",
           "looked for ladybugs", "made mud pies")),
    Place("school", "at", ("the classroom", "the playground", "the reading corner", "the art table",
                           "the big window", "the coat hooks", "the music room"),
          ("hamster", "goldfish", "sparrow"),
          ("painted pictures", "read a book together", "played tag at recess", "sang songs",
           "built a tower of blocks", "counted to one hundred", "made paper hats"), outdoor=False),
    Place("zoo", "at", ("the lion house", "the monkey trees", "the penguin pool", "the giraffe fence",
                        "the snack stand", "the bird house", "the elephant pond"),
          ("lion", "monkey", "penguin", "giraffe", "elephant", "zebra", "parrot", "tiger"),
          ("watched the monkeys swing", "counted the penguins", "waved at the giraffes", "ate ice cream by the gate",
           "listened to the lions roar", "looked at the colorful birds")),
    Place("lake", "at", ("the wooden dock", "the little boat", "the tall reeds", "the sandy shore",
                         "the lily pads", "the old willow tree"),
          ("frog", "duck", "fish", "turtle", "swan", "dragonfly", "beaver"),
          ("skipped stones", "fed the ducks", "paddled in the boat", "caught tadpoles in a jar",
           "dipped their toes in the water", "watched the fish jump")),
    Place("meadow", "in", ("the tall grass", "the wild flowers", "a big round rock", "the old fence",
                           "the little hill", "a lonely tree"),
          ("rabbit", "butterfly", "bee", "sheep", "mouse", "grasshopper"),
          ("picked flowers", "rolled in the grass", "played tag", "made flower crowns", "looked at the clouds",
           "ran up the little hill")),
    Place("market", "at", ("the fruit stand", "the bakery", "the fountain", "the toy shop", "the flower stall",
                           "the cheese cart", "the big clock"),
          ("pigeon", "cat", "dog"),
          ("tasted fresh bread", "looked at the toys", "threw a coin in the fountain", "bought red apples",
           "smelled the flowers", "listened to a man play music")),
    Place("library", "at", ("the tall shelves", "the reading rug", "the picture books", "the big window",
                            "the soft chairs", "the front desk"),
          ("cat", "goldfish"),
          ("read stories", "looked at picture books", "listened to story time", "found a book about dragons",
           "sat on the soft rug", "whispered about their favorite books"), outdoor=False),
    Place("backyard", "in", ("the swing set", "the wooden fence", "the apple tree", "the sandbox",
                             "the tree house", "the flower bed", "the little shed"),
          ("squirrel", "bird", "cat", "dog", "bunny", "ladybug"),
          ("played on the swing", "climbed the apple tree", "blew bubbles", "played catch",
           "jumped through the sprinkler", "made a tent with a blanket")),
    Place("mountain", "on", ("the rocky path", "the little waterfall", "the snowy top", "a dark cave",
                             "the pine trees", "a flat rock"),
          ("goat", "eagle", "deer", "chipmunk", "marmot"),
          ("climbed the path", "looked down at the valley", "had a picnic on a rock", "threw snowballs",
           "found pretty stones", "counted the clouds")),
    Place("river", "by", ("the stepping stones", "the old bridge", "the muddy bank", "the big willow",
                          "the little waterfall", "the fishing spot"),
          ("fish", "frog", "duck", "otter", "heron", "beaver"),
          ("threw sticks in the water", "hopped across the stones", "watched the boats", "looked for frogs",
           "made little boats of leaves", "sat on the bank")),
    Place("playground", "at", ("the tall slide", "the monkey bars", "the seesaw", "the sandbox",
                               "the climbing wall", "the merry-go-round"),
          ("pigeon", "squirrel", "puppy"),
          ("went down the slide", "swung on the monkey bars", "rode the seesaw", "played hide and seek",
           "raced to the climbing wall", "spun on the merry-go-round")),
    Place("fair", "at", ("the big wheel", "the merry-go-round", "the cotton candy stand", "the balloon stand",
                         "the pony ride", "the prize tent"),
          ("pony", "goat", "rabbit", "chicken"),
          ("rode the merry-go-round", "ate cotton candy", "won a little prize", "went on the big wheel",
           "watched a clown juggle", "petted the baby goats")),
    Place("castle", "in", ("the high tower", "the great hall", "the old drawbridge", "the royal garden",
                           "the secret stairs", "the throne room"),
          ("dragon", "horse", "owl", "mouse", "raven"),
          ("explored the tower", "danced in the great hall", "walked over the drawbridge", "had a royal feast",
           "played knights and dragons", "looked out of the high window"), outdoor=False),
    Place("campsite", "at", ("the green tent", "the campfire", "the big log", "the lake shore",
                             "the tall trees", "the picnic table"),
          ("raccoon", "owl", "deer", "squirrel", "firefly", "frog"),
          ("roasted marshmallows", "told stories by the fire", "looked at the stars", "built a fire ring of stones",
           "went on a short hike", "sang songs by the campfire")),
    Place("kitchen", "in", ("the big table", "the oven", "the cupboard", "the fridge", "the window sill",
                            "the cookie jar"),
          ("cat", "dog", "mouse"),
          ("baked cookies", "made a sandwich", "mixed the batter", "set the table", "washed the berries",
           "counted the spoons"), outdoor=False),
    Place("snowy hill", "on", ("the big snowman", "the sled track", "a snowy pine", "the frozen pond",
                               "a pile of snow", "the little cabin"),
          ("rabbit", "fox", "bird", "deer", "penguin"),
          ("rode the sled down the hill", "built a snowman", "made snow angels", "had a snowball fight",
           "drank hot cocoa", "slid on the ice")),
    Place("aquarium", "at", ("the shark tank", "the big glass wall", "the jellyfish room", "the touch pool",
                             "the tunnel", "the penguin rocks"),
          ("shark", "jellyfish", "turtle", "octopus", "seal", "starfish"),
          ("watched the sharks swim", "touched a starfish", "walked through the tunnel", "counted the fish",
           "waved at the seals", "pressed their noses to the glass"), outdoor=False),
    Place("island", "on", ("the palm trees", "the white sand", "a big coconut tree", "the old boat",
                           "a cave by the sea", "the rocky shore"),
          ("parrot", "crab", "turtle", "monkey", "seagull"),
          ("built a hut of leaves", "looked for treasure", "swam in the blue water", "picked coconuts",
           "drew pictures in the sand", "watched the sunset")),
)

# (noun, adjectives it takes, plural?) for the important objects of a story.
OBJECTS: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("ball", ("red", "blue", "bouncy", "big", "striped", "yellow"), False),
    ("kite", ("red", "yellow", "rainbow", "big", "paper"), False),
    ("teddy bear", ("soft", "brown", "old", "fluffy", "little"), False),
    ("toy car", ("red", "fast", "little", "shiny", "green"), False),
    ("hat", ("blue", "straw", "funny", "warm", "pointy", "green"), False),
    ("scarf", ("red", "striped", "woolly", "long", "purple"), False),
    ("key", ("golden", "shiny", "small", "old", "silver"), False),
    ("book", ("picture", "favorite", "old", "little", "big"), False),
    ("doll", ("rag", "little", "pretty", "old", "wooden"), False),
    ("robot", ("toy", "little", "silver", "tin", "blue"), False),
    ("drum", ("little", "toy", "red", "shiny"), False),
    ("boat", ("toy", "paper", "wooden", "little", "red"), False),
    ("necklace", ("bead", "shiny", "pretty", "shell"), False),
    ("shell", ("pink", "shiny", "spiral", "big", "white"), False),
    ("marbles", ("blue", "glass", "shiny", "colorful"), True),
    ("backpack", ("green", "purple", "new", "little", "yellow"), False),
    ("mittens", ("red", "woolly", "warm", "striped"), True),
    ("whistle", ("silver", "little", "wooden", "shiny"), False),
    ("music box", ("little", "wooden", "old", "pink"), False),
    ("train", ("toy", "wooden", "little", "blue"), False),
    ("bucket", ("yellow", "little", "red", "sand"), False),
    ("umbrella", ("yellow", "spotty", "big", "rainbow"), False),
    ("blanket", ("soft", "blue", "cozy", "old", "warm"), False),
    ("ribbon", ("pink", "long", "shiny", "red"), False),
    ("coin", ("shiny", "lucky", "gold", "old"), False),
    ("stone", ("smooth", "special", "sparkly", "round"), False),
    ("feather", ("long", "blue", "soft", "golden"), False),
    ("balloon", ("red", "big", "green", "shiny"), False),
    ("map", ("old", "treasure", "paper", "little"), False),
    ("crayons", ("new", "colorful", "wax", "bright"), True),
    ("jump rope", ("pink", "long", "new", "striped"), False),
    ("flashlight", ("small", "yellow", "new", "bright"), False),
    ("puzzle", ("big", "animal", "new", "wooden"), False),
    ("stuffed bunny", ("soft", "gray", "white", "old"), False),
    ("lunch box", ("blue", "metal", "red", "new"), False),
    ("wand", ("magic", "sparkly", "wooden", "star"), False),
    ("boots", ("rain", "red", "yellow", "muddy"), True),
    ("bell", ("little", "silver", "shiny", "brass"), False),
    ("spoon", ("silver", "wooden", "big", "special"), False),
    ("sticker", ("star", "shiny", "gold", "rainbow"), False),
)

# (food, "p" plural / "m" mass noun / "c" countable singular)
FOODS: tuple[tuple[str, str], ...] = (
    ("cookies", "p"), ("cake", "c"), ("apples", "p"), ("pie", "c"), ("sandwiches", "p"),
    ("soup", "m"), ("pancakes", "p"), ("berries", "p"), ("muffins", "p"), ("bread", "m"),
    ("ice cream", "m"), ("lemonade", "m"), ("cupcakes", "p"), ("carrots", "p"), ("honey", "m"),
    ("pizza", "m"), ("bananas", "p"), ("cheese", "m"), ("grapes", "p"), ("popcorn", "m"),
    ("oranges", "p"), ("toast with jam", "m"), ("cherries", "p"), ("nuts", "p"), ("strawberries", "p"),
    ("pears", "p"), ("corn muffins", "p"), ("noodles", "p"), ("rice pudding", "m"), ("peaches", "p"),
)

ANIMALS: tuple[str, ...] = (
    "dog", "puppy", "cat", "kitten", "bunny", "bird", "duck", "frog", "owl", "fox", "bear", "mouse",
    "squirrel", "turtle", "horse", "pig", "cow", "goat", "lamb", "butterfly", "ladybug", "bee", "snail",
    "deer", "hedgehog", "chick", "hen", "parrot", "monkey", "elephant", "giraffe", "penguin", "fish",
    "crab", "swan", "lion", "tiger", "zebra", "pony", "raccoon", "beaver", "otter", "dragon", "whale",
)
# Animals that can be the hero of a story ("a little fox named Kim").
HERO_ANIMALS: tuple[str, ...] = (
    "bunny", "fox", "bear", "mouse", "squirrel", "turtle", "owl", "duck", "frog", "puppy", "kitten",
    "hedgehog", "penguin", "lamb", "elephant", "monkey", "pig", "deer", "raccoon", "otter", "dragon",
    "lion", "cat", "dog", "bird", "pony", "goat", "beaver",
)
# Homes of animal heroes, by animal; people live in houses.
ANIMAL_HOMES: dict[str, str] = {
    "bunny": "a burrow under a hill", "fox": "a den near the river", "bear": "a cave in the woods",
    "mouse": "a tiny hole in a wall", "squirrel": "a nest in a tall tree", "turtle": "a pond with lily pads",
    "owl": "a hollow tree", "duck": "a nest by the lake", "frog": "a quiet pond", "hedgehog": "a pile of leaves",
    "penguin": "a cold, icy land", "beaver": "a lodge on the river", "otter": "a den by the river",
    "dragon": "a cave on a mountain", "monkey": "a tall tree in the jungle", "lion": "the wide grassland",
    "raccoon": "an old log", "deer": "a green forest", "bird": "a nest in an apple tree",
}

SMALL_ADJ = ("little", "small", "young", "tiny")
KIND_ADJ = ("kind", "happy", "curious", "brave", "shy", "cheerful", "clever", "gentle", "busy", "funny",
            "friendly", "quiet", "playful", "silly", "smart", "helpful", "lively")
COLORS = ("red", "blue", "green", "yellow", "purple", "orange", "pink", "brown", "white", "gray", "black")

HAPPY = ("happy", "glad", "excited", "cheerful", "joyful")
SAD = ("sad", "upset", "worried", "unhappy", "gloomy")
SCARED = ("scared", "afraid", "nervous", "frightened")

WEATHER = ("sunny", "rainy", "windy", "snowy", "cloudy", "warm", "cold", "bright", "foggy", "chilly", "hot")
# What the sky looks like in each weather (scenery sentences stay consistent with the opening).
SKY = {
    "sunny": ("The sun was warm and the sky was blue.", "The sun was high in a clear sky."),
    "bright": ("The sun was bright and the sky was clear.", "Everything shone in the bright light."),
    "warm": ("The air was warm and soft.", "It was warm, and the sky was blue."),
    "hot": ("The sun was hot, so they looked for shade.", "It was so hot that {A} wanted a cold drink."),
    "rainy": ("Little drops of rain fell now and then.", "The ground was wet from the rain."),
    "cloudy": ("Big gray clouds moved across the sky.", "The sky was gray, but nobody minded."),
    "foggy": ("The fog made everything look soft and white.", "Through the fog, the trees looked like giants."),
    "windy": ("The wind blew and the leaves danced.", "A strong wind pulled at their hair."),
    "cold": ("The air was cold, and their breath made little clouds.", "It was cold, so {A} was glad to have a warm coat."),
    "chilly": ("It was a little chilly, so {A} wore a sweater.", "The chilly air made their noses red."),
    "snowy": ("Snow fell softly all around.", "Everything was white with snow."),
}
TIMES = ("morning", "afternoon", "evening", "day")
DAYS = ("Saturday", "Sunday", "Monday", "Friday", "Tuesday", "Wednesday", "Thursday")
SEASONS = ("spring", "summer", "fall", "winter")

HOBBIES = (
    "drawing pictures", "singing songs", "playing with blocks", "reading books", "running fast",
    "jumping in puddles", "building towers", "dancing", "climbing trees", "looking at the stars",
    "helping in the garden", "baking cakes", "playing ball", "counting things", "making up songs",
    "collecting stones", "riding a bike", "playing hide and seek", "painting", "telling jokes",
    "feeding the birds", "making paper boats", "looking for bugs", "playing the drum", "swimming",
)
GAMES = ("hide and seek", "tag", "catch", "pretend pirates", "leapfrog", "hopscotch", "follow the leader",
         "red light, green light", "pretend store", "a guessing game")
SOUNDS = ("a loud bang", "a soft squeak", "a funny noise", "a little cry", "a rustle in the bushes",
          "a splash", "a tiny meow", "a quiet buzz", "a strange thump", "a happy chirp")

# Words the test-name generator must never produce (besides the name list).
def all_words() -> set[str]:
    """Every lower-case word that appears in this lexicon.

    Example:
        >>> "sandbox" in all_words()
        True
    """
    words: set[str] = set()

    def add(s: str) -> None:
        for w in s.replace(",", " ").replace("-", " ").split():
            words.add(w.lower())

    for p in PLACES:
        for s in (p.noun, p.prep, *p.features, *p.animals, *p.play):
            add(s)
    for noun, adjs, _ in OBJECTS:
        add(noun)
        for a in adjs:
            add(a)
    for group in (ANIMALS, HERO_ANIMALS, SMALL_ADJ, KIND_ADJ, COLORS, HAPPY, SAD, SCARED, WEATHER, TIMES,
                  DAYS, SEASONS, HOBBIES, GAMES, SOUNDS, tuple(ANIMAL_HOMES.values()), tuple(f for f, _ in FOODS)):
        for s in group:
            add(s)
    return words

"""QuickDraw category names and the category sets of the experiments.

Names are the official QuickDraw ones, with spaces (`"alarm clock"`), exactly
the file stems of the official `full/simplified/<category>.ndjson` files. The
class id of a category is its index in the case-insensitive sort of the set in
use (`sort_categories`), as in SketchXAI's `quickdraw_to_hdf5.py`. (doodleNet's
`class_names.txt` lists the same 345 names, with `_` for spaces, in the order
of its own outputs: map by name, never by index.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence


def sort_categories(names: Iterable[str]) -> tuple[str, ...]:
  """The names in the official class-id order: sorted case-insensitively."""
  return tuple(sorted(names, key=str.lower))


# All 345 official categories, in class-id order.
QUICKDRAW_345: tuple[str, ...] = (
    "aircraft carrier", "airplane", "alarm clock", "ambulance", "angel",
    "animal migration", "ant", "anvil", "apple", "arm", "asparagus", "axe",
    "backpack", "banana", "bandage", "barn", "baseball", "baseball bat", "basket",
    "basketball", "bat", "bathtub", "beach", "bear", "beard", "bed", "bee", "belt",
    "bench", "bicycle", "binoculars", "bird", "birthday cake", "blackberry",
    "blueberry", "book", "boomerang", "bottlecap", "bowtie", "bracelet", "brain",
    "bread", "bridge", "broccoli", "broom", "bucket", "bulldozer", "bus", "bush",
    "butterfly", "cactus", "cake", "calculator", "calendar", "camel", "camera",
    "camouflage", "campfire", "candle", "cannon", "canoe", "car", "carrot",
    "castle", "cat", "ceiling fan", "cell phone", "cello", "chair", "chandelier",
    "church", "circle", "clarinet", "clock", "cloud", "coffee cup", "compass",
    "computer", "cookie", "cooler", "couch", "cow", "crab", "crayon", "crocodile",
    "crown", "cruise ship", "cup", "diamond", "dishwasher", "diving board", "dog",
    "dolphin", "donut", "door", "dragon", "dresser", "drill", "drums", "duck",
    "dumbbell", "ear", "elbow", "elephant", "envelope", "eraser", "eye",
    "eyeglasses", "face", "fan", "feather", "fence", "finger", "fire hydrant",
    "fireplace", "firetruck", "fish", "flamingo", "flashlight", "flip flops",
    "floor lamp", "flower", "flying saucer", "foot", "fork", "frog", "frying pan",
    "garden", "garden hose", "giraffe", "goatee", "golf club", "grapes", "grass",
    "guitar", "hamburger", "hammer", "hand", "harp", "hat", "headphones",
    "hedgehog", "helicopter", "helmet", "hexagon", "hockey puck", "hockey stick",
    "horse", "hospital", "hot air balloon", "hot dog", "hot tub", "hourglass",
    "house", "house plant", "hurricane", "ice cream", "jacket", "jail", "kangaroo",
    "key", "keyboard", "knee", "knife", "ladder", "lantern", "laptop", "leaf",
    "leg", "light bulb", "lighter", "lighthouse", "lightning", "line", "lion",
    "lipstick", "lobster", "lollipop", "mailbox", "map", "marker", "matches",
    "megaphone", "mermaid", "microphone", "microwave", "monkey", "moon", "mosquito",
    "motorbike", "mountain", "mouse", "moustache", "mouth", "mug", "mushroom",
    "nail", "necklace", "nose", "ocean", "octagon", "octopus", "onion", "oven",
    "owl", "paint can", "paintbrush", "palm tree", "panda", "pants", "paper clip",
    "parachute", "parrot", "passport", "peanut", "pear", "peas", "pencil",
    "penguin", "piano", "pickup truck", "picture frame", "pig", "pillow",
    "pineapple", "pizza", "pliers", "police car", "pond", "pool", "popsicle",
    "postcard", "potato", "power outlet", "purse", "rabbit", "raccoon", "radio",
    "rain", "rainbow", "rake", "remote control", "rhinoceros", "rifle", "river",
    "roller coaster", "rollerskates", "sailboat", "sandwich", "saw", "saxophone",
    "school bus", "scissors", "scorpion", "screwdriver", "sea turtle", "see saw",
    "shark", "sheep", "shoe", "shorts", "shovel", "sink", "skateboard", "skull",
    "skyscraper", "sleeping bag", "smiley face", "snail", "snake", "snorkel",
    "snowflake", "snowman", "soccer ball", "sock", "speedboat", "spider", "spoon",
    "spreadsheet", "square", "squiggle", "squirrel", "stairs", "star", "steak",
    "stereo", "stethoscope", "stitches", "stop sign", "stove", "strawberry",
    "streetlight", "string bean", "submarine", "suitcase", "sun", "swan", "sweater",
    "swing set", "sword", "syringe", "t-shirt", "table", "teapot", "teddy-bear",
    "telephone", "television", "tennis racquet", "tent", "The Eiffel Tower",
    "The Great Wall of China", "The Mona Lisa", "tiger", "toaster", "toe", "toilet",
    "tooth", "toothbrush", "toothpaste", "tornado", "tractor", "traffic light",
    "train", "tree", "triangle", "trombone", "truck", "trumpet", "umbrella",
    "underwear", "van", "vase", "violin", "washing machine", "watermelon",
    "waterslide", "whale", "wheel", "windmill", "wine bottle", "wine glass",
    "wristwatch", "yoga", "zebra", "zigzag",
)

# The 30 classes SketchXAI uses for stroke location inversion (spec A.1).
SKETCHXAI_30: tuple[str, ...] = sort_categories((
    "airplane", "apple", "baseball bat", "bed", "bicycle", "book", "bread",
    "broom", "camera", "car", "cell phone", "chair", "clock", "cloud", "eye",
    "eyeglasses", "face", "flower", "headphones", "hot dog", "laptop", "pants",
    "shorts", "smiley face", "snake", "spider", "star", "sun", "table", "tree",
))


def resolve_categories(spec: str | Sequence[str]) -> tuple[str, ...]:
  """Category names from a config value.

  Args:
    spec: `"all"` or `"345"` (every official category), `"sketchxai30"`, a
      comma-separated string of names, or a sequence of names.

  Returns:
    The names in the given order (duplicates removed, first kept).

  Raises:
    ValueError: when a name is not an official category (all are listed), or
      the spec names no category.
  """
  if isinstance(spec, str):
    if spec.strip() in ("all", "345"):
      return QUICKDRAW_345
    if spec.strip() == "sketchxai30":
      return SKETCHXAI_30
    spec = [name.strip() for name in spec.split(",") if name.strip()]
  names = tuple(dict.fromkeys(spec))
  if not names:
    raise ValueError("no category given: expected 'all', '345', "
                     "'sketchxai30', or a list of QuickDraw category names")
  official = frozenset(QUICKDRAW_345)
  unknown = [name for name in names if name not in official]
  if unknown:
    raise ValueError(f"unknown QuickDraw categories {unknown}: names are the "
                     "official ones with spaces, e.g. 'alarm clock' (see "
                     "sketchjax.data.categories.QUICKDRAW_345)")
  return names

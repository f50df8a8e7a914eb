"""Which ImageNet-1k labels a Sketchy class's photos clearly show, and back.

Indices are outputs of the 1001-way MobileNetV2 classifiers (index 0 =
"background", so ImageNet-1k class k is output k + 1), with the label of
../shared/pretrained/mobilenet_v2/imagenet_labels.txt in each comment. A
Sketchy class maps to the ImageNet labels that name the same object or a
kind of it (dog -> the 118 dog breeds, cat -> the five domestic cats);
no ImageNet label is shared by two classes. The 28 classes in
`SKETCHY_UNMAPPED` have no clear ImageNet-1k label (giraffe, helicopter,
deer, dolphin, ...) or only a near miss (alarm clock / analog clock,
mouse / computer mouse, seal / sea lion, car (sedan) / cab). Sketchy's
photo ids are WordNet synsets (`n02129604_*` = tiger); several are
ImageNet-1k synsets themselves, which this table agrees with.

The inverse, `imagenet_to_sketchy`, turns an ImageNet teacher's outputs
into retrieval classes (the data-free setting).
"""

from __future__ import annotations

SKETCHY_TO_IMAGENET: dict[str, tuple[int, ...]] = {
    "airplane": (405, 896),  # airliner, warplane
    "ant": (311,),  # ant
    "ape": (366, 367, 368, 369, 370),  # orangutan, gorilla, chimpanzee, gibbon, siamang
    "apple": (949,),  # Granny Smith
    "armor": (462, 491, 525),  # breastplate, chain mail, cuirass
    "axe": (597,),  # hatchet
    "banana": (955,),  # banana
    "bear": (295, 296, 297, 298),  # brown, American black, ice (polar), sloth bear
    "bee": (310,),  # bee
    "beetle": (301, 302, 303, 304, 305, 306, 307),  # tiger beetle ... rhinoceros beetle
    "bell": (495,),  # chime, bell, gong
    "bench": (704,),  # park bench
    "bicycle": (445, 672),  # bicycle-built-for-two, mountain bike
    "blimp": (406,),  # airship, dirigible
    "bread": (931,),  # French loaf
    "butterfly": (322, 323, 324, 325, 326, 327),  # admiral, ringlet, monarch, cabbage, sulphur,
    # lycaenid
    "camel": (355,),  # Arabian camel
    "candle": (471,),  # candle
    "cannon": (472,),  # cannon
    "castle": (484,),  # castle
    "cat": (282, 283, 284, 285, 286),  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    "chair": (424, 560, 766),  # barber chair, folding chair, rocking chair
    "chicken": (8, 9),  # cock, hen
    "church": (498,),  # church
    "couch": (832,),  # studio couch
    "cow": (346,),  # ox
    "crab": (119, 120, 121, 122),  # Dungeness, rock, fiddler, king crab
    "crocodilian": (50, 51),  # African crocodile, American alligator
    "cup": (969,),  # cup
    "dog": tuple(range(152, 270)),  # the 118 dog breeds, Chihuahua ... Mexican hairless
    "duck": (98, 99),  # drake, red-breasted merganser
    "elephant": (102, 386, 387),  # tusker, Indian elephant, African elephant
    "fan": (546,),  # electric fan
    "fish": (1, 2) + tuple(range(390, 399)),  # tench, goldfish, barracouta, eel, coho,
    # rock beauty, anemone fish, sturgeon, gar, lionfish, puffer
    "frog": (31, 32, 33),  # bullfrog, tree frog, tailed frog
    "geyser": (975,),  # geyser
    "guitar": (403, 547),  # acoustic guitar, electric guitar
    "hamburger": (934,),  # cheeseburger
    "hammer": (588,),  # hammer
    "harp": (595,),  # harp
    "hat": (516, 809),  # cowboy hat, sombrero
    "hedgehog": (103, 335),  # echidna (Sketchy's own synset n01872401), porcupine, hedgehog
    "hermit_crab": (126,),  # hermit crab
    "horse": (340,),  # sorrel
    "hot-air_balloon": (418,),  # balloon
    "hotdog": (935,),  # hotdog
    "hourglass": (605,),  # hourglass
    "jack-o-lantern": (608,),  # jack-o'-lantern
    "jellyfish": (108,),  # jellyfish
    "kangaroo": (105,),  # wallaby, brush kangaroo
    "lion": (292,),  # lion
    "lizard": tuple(range(39, 50)),  # banded gecko, iguana, ... Komodo dragon
    "lobster": (123, 124),  # American lobster, spiny lobster
    "mushroom": (948,),  # mushroom
    "owl": (25,),  # great grey owl
    "parrot": (88, 89, 90, 91),  # African grey, macaw, sulphur-crested cockatoo, lorikeet
    "penguin": (146,),  # king penguin
    "piano": (580, 882),  # grand piano, upright piano
    "pickup_truck": (718,),  # pickup
    "pig": (342,),  # hog
    "pineapple": (954,),  # pineapple
    "pistol": (764,),  # revolver
    "pizza": (964,),  # pizza
    "pretzel": (933,),  # pretzel
    "rabbit": (331, 333),  # wood rabbit, Angora
    "racket": (753,),  # racket
    "ray": (6, 7),  # electric ray, stingray
    "rifle": (414, 765),  # assault rifle, rifle
    "sailboat": (485, 781, 872, 915),  # catamaran, schooner, trimaran, yawl
    "saxophone": (777,),  # sax
    "scorpion": (72,),  # scorpion
    "sea_turtle": (34, 35),  # loggerhead, leatherback turtle
    "shark": (3, 4, 5),  # great white shark, tiger shark, hammerhead
    "sheep": (349,),  # ram
    "shoe": (503, 631, 771),  # clog, Loafer, running shoe
    "snail": (114,),  # snail
    "snake": tuple(range(53, 70)),  # thunder snake ... sidewinder (17 snakes)
    "songbird": tuple(range(11, 22)),  # brambling, goldfinch, ... chickadee, water ouzel
    "spider": tuple(range(73, 79)),  # garden spiders, black widow, tarantula, wolf spider
    "spoon": (911,),  # wooden spoon
    "squirrel": (336,),  # fox squirrel
    "starfish": (328,),  # starfish
    "strawberry": (950,),  # strawberry
    "swan": (101,),  # black swan
    "table": (533,),  # dining table
    "tank": (848,),  # tank, army tank
    "teapot": (850,),  # teapot
    "teddy_bear": (851,),  # teddy, teddy bear
    "tiger": (293,),  # tiger
    "trumpet": (514,),  # cornet, horn, trumpet
    "turtle": (36, 37, 38),  # mud turtle, terrapin, box turtle
    "umbrella": (880,),  # umbrella
    "violin": (890,),  # violin
    "volcano": (981,),  # volcano
    "wading_bird": tuple(range(128, 137)),  # white stork ... limpkin (storks, spoonbill,
    # flamingo, herons, egret, bittern, crane)
    "wine_bottle": (908,),  # wine bottle
    "zebra": (341,),  # zebra
}

SKETCHY_UNMAPPED: tuple[str, ...] = (
    "alarm_clock", "bat", "cabin", "car_(sedan)", "deer", "dolphin", "door", "eyeglasses",
    "flower", "giraffe", "helicopter", "knife", "motorcycle", "mouse", "pear", "raccoon",
    "rhinoceros", "rocket", "saw", "scissors", "seagull", "seal", "skyscraper", "sword", "tree",
    "wheelchair", "windmill", "window",
)


def imagenet_to_sketchy() -> dict[int, str]:
  """{classifier output index: Sketchy class} for every mapped ImageNet label."""
  return {index: name for name, indices in SKETCHY_TO_IMAGENET.items() for index in indices}

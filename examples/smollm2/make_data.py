"""Writes this example's data (committed; rerun only to change it): two-digit arithmetic word problems
in chat format and as prompt/completion (train) and as prompt/answer (test), and two general-knowledge multiple-choice tasks
for lm-eval (capital cities, everyday facts) on which forgetting is measured. The same training problems
also as verifiable rows {prompt, answer} (GRPO, specs/arith-grpo.yaml) and as preference pairs
{prompt, chosen, rejected} (DPO, specs/arith-dpo.yaml): chosen the right number, rejected a plausible
wrong one (see `wrong_answer`), drawn from their own seeded generator so the files above stay as they were.

    python examples/smollm2/make_data.py
"""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

HERE = Path(__file__).resolve().parent
NAMES = ["Tom", "Anna", "Ravi", "Mia", "Leo", "Sara", "Omar", "Lena", "Ken", "Ines", "Paul", "Yuki"]
THINGS = ["apples", "stamps", "marbles", "books", "coins", "stickers", "shells", "pencils", "cards", "eggs"]
ADD = ["{n} has {a} {t} and gets {b} more. How many {t} does {n} have now?",
       "{n} collected {a} {t} on Monday and {b} {t} on Tuesday. How many {t} did {n} collect in total?",
       "A box holds {a} {t}. {n} puts in another {b}. How many {t} are in the box?"]
SUB = ["{n} has {a} {t} and gives away {b}. How many {t} does {n} have left?",
       "There were {a} {t} on the table. {n} took {b} of them. How many {t} are still on the table?",
       "{n} had {a} {t} and lost {b}. How many {t} does {n} have now?"]


def problems(rng: random.Random, n: int) -> list[tuple[str, int]]:
    out, seen = [], set()
    while len(out) < n:
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        if rng.random() < 0.5:
            q, ans = rng.choice(ADD), a + b
        else:
            a, b = max(a, b), min(a, b)
            q, ans = rng.choice(SUB), a - b
        text = q.format(n=rng.choice(NAMES), a=a, b=b, t=rng.choice(THINGS))
        if text not in seen:
            seen.add(text)
            out.append((text, ans))
    return out


def wrong_answer(rng: random.Random, question: str, answer: int) -> int:
    """A plausible wrong answer: off by ten, off by one, the other operation (a slip of the sign), or
    the tens and units swapped; never the answer itself, never negative."""
    a, b = (int(x) for x in re.findall(r"\d+", question)[:2])  # the two operands, in the order asked
    other = abs(a - b) if answer == a + b else a + b
    options = [answer + 10, answer - 10, answer + 1, answer - 1, other, int(str(answer)[::-1])]
    return rng.choice([w for w in options if w != answer and w >= 0])


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon", "Japan": "Tokyo",
    "China": "Beijing", "Russia": "Moscow", "Egypt": "Cairo", "Greece": "Athens", "Austria": "Vienna",
    "Ireland": "Dublin", "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Denmark": "Copenhagen",
    "Poland": "Warsaw", "Hungary": "Budapest", "Belgium": "Brussels", "the Netherlands": "Amsterdam",
    "the United Kingdom": "London", "Argentina": "Buenos Aires", "Peru": "Lima", "Chile": "Santiago",
    "Colombia": "Bogota", "Venezuela": "Caracas", "Mexico": "Mexico City", "Cuba": "Havana", "Thailand": "Bangkok",
    "South Korea": "Seoul", "Indonesia": "Jakarta", "the Philippines": "Manila", "Iran": "Tehran", "Iraq": "Baghdad",
    "Kenya": "Nairobi", "Ukraine": "Kyiv", "the Czech Republic": "Prague", "Romania": "Bucharest", "Iceland": "Reykjavik",
    "Vietnam": "Hanoi", "Saudi Arabia": "Riyadh", "Turkey": "Ankara", "Canada": "Ottawa", "Australia": "Canberra",
    "India": "New Delhi", "Afghanistan": "Kabul", "Syria": "Damascus", "Lebanon": "Beirut", "Ethiopia": "Addis Ababa",
    "Scotland": "Edinburgh",
}
FACTS = [  # (question, answer, distractors)
    ("How many legs does a spider have?", "eight", ["six", "four", "ten"]),
    ("How many legs does an insect have?", "six", ["eight", "four", "two"]),
    ("How many days are in a week?", "seven", ["five", "ten", "twelve"]),
    ("How many months are in a year?", "twelve", ["ten", "seven", "fifteen"]),
    ("How many hours are in a day?", "twenty-four", ["twelve", "sixty", "ten"]),
    ("How many minutes are in an hour?", "sixty", ["twenty-four", "one hundred", "twelve"]),
    ("How many sides does a triangle have?", "three", ["four", "five", "six"]),
    ("How many sides does a square have?", "four", ["three", "five", "eight"]),
    ("What color is a ripe banana?", "yellow", ["blue", "purple", "black"]),
    ("What color is grass?", "green", ["red", "blue", "orange"]),
    ("What color is snow?", "white", ["green", "red", "brown"]),
    ("What color is the sky on a clear day?", "blue", ["green", "red", "yellow"]),
    ("What color is coal?", "black", ["white", "yellow", "pink"]),
    ("What is frozen water called?", "ice", ["steam", "sand", "smoke"]),
    ("What gas do humans need to breathe?", "oxygen", ["helium", "neon", "argon"]),
    ("Which planet do we live on?", "Earth", ["Mars", "Venus", "Jupiter"]),
    ("What is the largest planet in the solar system?", "Jupiter", ["Mercury", "Mars", "Venus"]),
    ("Which star is closest to the Earth?", "the Sun", ["Sirius", "Polaris", "Vega"]),
    ("What do bees make?", "honey", ["milk", "silk", "wool"]),
    ("What do cows give us to drink?", "milk", ["honey", "oil", "wine"]),
    ("What animal is known as man's best friend?", "the dog", ["the snake", "the shark", "the spider"]),
    ("What is a baby cat called?", "a kitten", ["a puppy", "a calf", "a foal"]),
    ("What is a baby dog called?", "a puppy", ["a kitten", "a lamb", "a chick"]),
    ("What is the largest ocean on Earth?", "the Pacific Ocean", ["the Arctic Ocean", "the Indian Ocean", "the Southern Ocean"]),
    ("What is the tallest mountain in the world?", "Mount Everest", ["Mont Blanc", "Mount Fuji", "Ben Nevis"]),
    ("What is the longest river in Africa?", "the Nile", ["the Thames", "the Seine", "the Danube"]),
    ("Which animal is the largest mammal?", "the blue whale", ["the mouse", "the rabbit", "the fox"]),
    ("What do plants need from the sun to grow?", "light", ["sound", "salt", "plastic"]),
    ("At what temperature in Celsius does water freeze?", "zero degrees", ["fifty degrees", "one hundred degrees", "thirty degrees"]),
    ("At what temperature in Celsius does water boil?", "one hundred degrees", ["zero degrees", "ten degrees", "forty degrees"]),
    ("Which organ pumps blood through the body?", "the heart", ["the lungs", "the stomach", "the skin"]),
    ("Which organ do we use to think?", "the brain", ["the liver", "the knee", "the elbow"]),
    ("What do we use our eyes for?", "seeing", ["hearing", "tasting", "smelling"]),
    ("What do we use our ears for?", "hearing", ["seeing", "walking", "tasting"]),
    ("Which season comes after winter?", "spring", ["autumn", "summer", "winter"]),
    ("Which season is the hottest?", "summer", ["winter", "autumn", "spring"]),
    ("Which day comes after Monday?", "Tuesday", ["Sunday", "Friday", "Thursday"]),
    ("Which day comes after Friday?", "Saturday", ["Monday", "Wednesday", "Tuesday"]),
    ("Which month comes after January?", "February", ["April", "June", "October"]),
    ("Which month comes after November?", "December", ["March", "May", "August"]),
    ("What is the opposite of hot?", "cold", ["warm", "red", "loud"]),
    ("What is the opposite of big?", "small", ["large", "tall", "heavy"]),
    ("What is the opposite of up?", "down", ["over", "high", "left"]),
    ("What is the opposite of day?", "night", ["noon", "morning", "week"]),
    ("What is the opposite of happy?", "sad", ["glad", "funny", "kind"]),
    ("What is the opposite of fast?", "slow", ["quick", "rapid", "loud"]),
    ("Who wrote Romeo and Juliet?", "William Shakespeare", ["Charles Dickens", "Mark Twain", "Jane Austen"]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["Pablo Picasso", "Vincent van Gogh", "Claude Monet"]),
    ("Which language is spoken in France?", "French", ["Japanese", "Swahili", "Hindi"]),
    ("Which language is spoken in Spain?", "Spanish", ["Russian", "Chinese", "Dutch"]),
    ("Which language is spoken in Japan?", "Japanese", ["Portuguese", "Arabic", "Polish"]),
    ("What is the currency of the United States?", "the dollar", ["the yen", "the rupee", "the euro"]),
    ("What is the currency of Japan?", "the yen", ["the dollar", "the peso", "the pound"]),
    ("What is the chemical symbol for water?", "H2O", ["CO2", "NaCl", "O3"]),
    ("What shape is a ball?", "round", ["square", "flat", "triangular"]),
    ("What do fish use to breathe?", "gills", ["lungs", "feathers", "wings"]),
    ("What do birds have that help them fly?", "wings", ["gills", "fins", "hooves"]),
    ("Which animal has a long trunk?", "the elephant", ["the cat", "the horse", "the frog"]),
    ("Which animal has black and white stripes?", "the zebra", ["the lion", "the camel", "the goat"]),
    ("What is the main ingredient of bread?", "flour", ["sugar", "salt", "rice"]),
]


def mc_rows(rng: random.Random) -> dict[str, list[dict]]:
    caps = list(CAPITALS.values())
    capitals = []
    for country, city in CAPITALS.items():
        choices = [city] + rng.sample([c for c in caps if c != city], 3)
        rng.shuffle(choices)
        capitals.append({"question": f"What is the capital of {country}?", "choices": choices, "label": choices.index(city)})
    facts = []
    for q, a, wrong in FACTS:
        choices = [a, *wrong]
        rng.shuffle(choices)
        facts.append({"question": q, "choices": choices, "label": choices.index(a)})
    return {"smol_capitals": capitals, "smol_facts": facts}


TASK = """\
# lm-eval task: {what}. Written by make_data.py; tunebook makes data_files absolute at evaluation time.
task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {name}.jsonl
test_split: test
output_type: multiple_choice
doc_to_text: "Question: {{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""


def write(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def main() -> None:
    rng = random.Random(15)
    items = problems(rng, 460)
    train, test = items[:400], items[400:]
    write(HERE / "data" / "arith_train.jsonl",
          [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": str(a)}]} for q, a in train])
    # the same problems as prompt/completion rows: specs/arith-completion.yaml, the comparison run
    write(HERE / "data" / "arith_train_pc.jsonl", [{"prompt": q, "completion": f" {a}"} for q, a in train])
    write(HERE / "data" / "arith_test.jsonl", [{"prompt": q, "answer": str(a)} for q, a in test])
    # the same problems for the RL and preference variants (specs/arith-grpo.yaml, specs/arith-dpo.yaml)
    write(HERE / "data" / "arith_train_verifiable.jsonl", [{"prompt": q, "answer": str(a)} for q, a in train])
    wrong = random.Random(16)
    write(HERE / "data" / "arith_train_pref.jsonl",
          [{"prompt": q, "chosen": str(a), "rejected": str(wrong_answer(wrong, q, a))} for q, a in train])
    what = {"smol_capitals": "the capital city of a country (4 choices)", "smol_facts": "everyday facts (4 choices)"}
    for name, rows in mc_rows(rng).items():
        write(HERE / "tasks" / f"{name}.jsonl", rows)
        (HERE / "tasks" / f"{name}.yaml").write_text(TASK.format(name=name, what=what[name]))


if __name__ == "__main__":
    main()

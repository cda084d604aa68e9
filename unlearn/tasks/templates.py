"""Word-problem templates for the synthetic arithmetic task.

Each template is a ``str.format`` string with the fields ``{a}`` and ``{b}``
(the operands in equation order: for division ``{a}`` is the dividend and
``{b}`` the divisor) and optionally ``{name}`` (a first name from ``NAMES``)
and ``{item}`` (a plural noun from ``ITEMS``). Templates never contain
"Answer:"; the task code appends " Answer:" itself.

Per operation there are 20 training templates and 10 held-out evaluation
templates, each with its own sentence structure, so evaluating on the held-out
set measures whether a skill generalises beyond memorised phrasings.

Character set (the model is character-level and tiny): ASCII letters, digits,
space and ``. , ? ' -`` only. Sentences stay short (about 110 characters at
most once filled) to keep sequences cheap.
"""

# fmt: off
NAMES: tuple[str, ...] = (
    "Mia", "Leo", "Ava", "Noah", "Emma", "Liam", "Zoe", "Omar", "Ella", "Sam",
    "Nina", "Ben", "Lily", "Max", "Ruby", "Jack", "Maya", "Theo", "Iris", "Kai",
)

# Plural nouns that read naturally in every {item} slot ("bags of X", "shares X").
ITEMS: tuple[str, ...] = (
    "apples", "shells", "stickers", "marbles", "coins", "cards", "books",
    "pencils", "stamps", "beads", "cookies", "buttons", "rocks", "toys",
    "candies", "crayons", "blocks", "leaves", "tickets", "balloons",
)
# fmt: on

_ADD_TRAIN = (
    "{name} has {a} {item} and finds {b} more. How many {item} does {name} have now?",
    "There are {a} {item} in a box and {b} more are added. How many {item} are in the box?",
    "{name} collected {a} {item} on Monday and {b} on Tuesday. How many {item} in total?",
    "What is the sum of {a} and {b}?",
    "A shelf holds {a} {item}. {name} puts {b} more on it. How many {item} are on the shelf?",
    "{name} had {a} {item}. A friend gave {name} {b} more. How many does {name} have?",
    "If you add {b} to {a}, what number do you get?",
    "One bag has {a} {item} and another has {b}. How many {item} are there altogether?",
    "{name} bought {a} {item}, then bought {b} more. How many {item} did {name} buy?",
    "A class read {a} pages in the morning and {b} pages after lunch. How many pages in all?",
    "{name} is {a} years old. How old will {name} be in {b} years?",
    "A train has {a} people on board. At the next stop {b} more get on. How many are on it now?",
    "Find the total of {a} and {b}.",
    "{name} walked {a} steps, rested, then walked {b} steps. How many steps did {name} walk?",
    "The red jar holds {a} {item} and the blue jar holds {b}. How many {item} do both hold?",
    "Start at {a} and count up by {b}. Where do you end?",
    "{name} saved {a} dollars last week and {b} dollars this week. How much did {name} save?",
    "A farm has {a} cows and {b} sheep. How many animals are on the farm?",
    "What do you get when {a} is increased by {b}?",
    "{name} scored {a} points in one game and {b} in the next. What was the total score?",
)

_ADD_EVAL = (
    "{name} owns {a} {item}. For a birthday, {name} gets {b} more. How many {item} now?",
    "Add {a} and {b}. What is the result?",
    "A garden has {a} roses and {b} tulips. How many flowers are in the garden?",
    "{name} drove {a} miles before noon and {b} miles after. How far did {name} drive?",
    "{a} plus {b} equals what number?",
    "In a pile there are {a} {item}. {name} tosses in another {b}. How big is the pile now?",
    "A team won {a} games last year and {b} games this year. How many games did it win?",
    "{name} read {a} books in spring and {b} in summer. How many books did {name} read?",
    "Combine {a} {item} with {b} {item}. How many {item} is that?",
    "On a bus, {a} seats were taken and {b} more riders sat down. How many seats are taken?",
)

# Subtraction operands are ordered so that {a} >= {b}: every template takes
# {b} away from {a} (or asks for their gap) and the answer is never negative.
_SUB_TRAIN = (
    "{name} has {a} {item} and gives away {b}. How many {item} does {name} have left?",
    "There were {a} {item} in a jar. {name} took out {b}. How many are still in the jar?",
    "What is {a} minus {b}?",
    "A shop had {a} {item} and sold {b} of them. How many {item} remain?",
    "{name} had {a} dollars and spent {b}. How much money is left?",
    "Take {b} away from {a}. What is left?",
    "A tree had {a} apples. Then {b} fell to the ground. How many apples are still on the tree?",
    "{name} needs {a} {item} and already has {b}. How many more does {name} need?",
    "How much greater is {a} than {b}?",
    "There were {a} birds on a wire. Then {b} flew away. How many birds are left?",
    "{name} is reading a book with {a} pages and has read {b}. How many pages are left?",
    "Subtract {b} from {a}.",
    "A bus carried {a} people. At a stop, {b} got off. How many people are on the bus now?",
    "{name} baked {a} muffins and ate {b}. How many muffins are left?",
    "Find the difference between {a} and {b}.",
    "A box held {a} {item}, but {b} were broken. How many {item} are not broken?",
    "Count down {b} from {a}. What number do you reach?",
    "{name} had {a} {item} and lost {b} on the way home. How many {item} are left?",
    "A class has {a} students, and {b} are absent today. How many students are present?",
    "The temperature was {a} degrees and dropped by {b} degrees. What is it now?",
)

_SUB_EVAL = (
    "{name} picked {a} {item} and dropped {b}. How many {item} does {name} hold now?",
    "What number is {b} less than {a}?",
    "A library had {a} books, and {b} were checked out. How many books are on the shelves?",
    "{a} take away {b} leaves how many?",
    "{name} wants to run {a} laps and has run {b}. How many laps are left to run?",
    "A pond had {a} ducks. When {b} ducks swam off, how many ducks stayed?",
    "{name} had {a} {item} and handed {b} to a friend. How many {item} does {name} keep?",
    "Decrease {a} by {b}. What do you get?",
    "A parking lot had {a} cars. After {b} cars left, how many cars were there?",
    "How far apart are the numbers {a} and {b}?",
)

_MUL_TRAIN = (
    "{name} has {a} bags with {b} {item} in each bag. How many {item} does {name} have?",
    "What is {a} times {b}?",
    "There are {a} rows of chairs with {b} chairs in each row. How many chairs are there?",
    "A box holds {b} {item}. How many {item} are in {a} boxes?",
    "{name} buys {a} packs of {item}. Each pack has {b}. How many {item} does {name} buy?",
    "Multiply {a} by {b}.",
    "Each of {a} tables has {b} cups on it. How many cups are on the tables?",
    "{name} reads {b} pages a day for {a} days. How many pages does {name} read?",
    "Find the product of {a} and {b}.",
    "A garden has {a} rows with {b} plants per row. How many plants are in the garden?",
    "{name} earns {b} dollars an hour and works {a} hours. How much does {name} earn?",
    "What is {a} groups of {b}?",
    "A car travels {b} miles each hour for {a} hours. How far does it go?",
    "{a} friends each bring {b} {item} to a party. How many {item} are there?",
    "A building has {a} floors with {b} windows on each floor. How many windows are there?",
    "{name} makes {a} piles of {item}, {b} in each pile. How many {item} are in the piles?",
    "What is the total of {a} copies of the number {b}?",
    "Each week {name} saves {b} dollars. How much does {name} save in {a} weeks?",
    "A tray has {a} rows of {b} cookies. How many cookies are on the tray?",
    "A crate holds {a} cartons, and each carton holds {b} eggs. How many eggs are in the crate?",
)

_MUL_EVAL = (
    "{name} fills {a} jars with {b} {item} each. How many {item} are in the jars?",
    "{a} multiplied by {b} is what?",
    "A theater has {a} rows and {b} seats in every row. How many seats does it have?",
    "Each of {a} kids has {b} {item}. How many {item} do the kids have in all?",
    "{name} runs {b} laps every day for {a} days. How many laps does {name} run?",
    "If one ticket costs {b} dollars, what do {a} tickets cost?",
    "A wall has {a} rows of tiles with {b} tiles per row. How many tiles cover the wall?",
    "There are {b} wheels on each of {a} carts. How many wheels are there?",
    "How many legs do {a} animals have if each has {b} legs?",
    "{name} has {a} albums. Every album holds {b} photos. How many photos fit in the albums?",
)

# Division: {a} is the dividend (a multiple of {b}) and {b} the divisor, so
# every template describes splitting {a} into {b} equal parts or groups of {b}.
_DIV_TRAIN = (
    "{name} shares {a} {item} equally among {b} friends. How many {item} does each friend get?",
    "What is {a} divided by {b}?",
    "{a} students form {b} equal teams. How many students are on each team?",
    "A box of {a} {item} is split into {b} equal piles. How many {item} are in each pile?",
    "How many groups of {b} can you make from {a}?",
    "Divide {a} by {b}.",
    "{name} has {a} {item} and puts {b} in each bag. How many bags does {name} fill?",
    "A rope {a} meters long is cut into {b} equal pieces. How long is each piece?",
    "There are {a} cookies packed equally into {b} boxes. How many cookies are in each box?",
    "{name} pays {a} dollars for {b} tickets that cost the same. What does one ticket cost?",
    "How many times does {b} go into {a}?",
    "A teacher gives {a} pencils evenly to {b} students. How many pencils does each one get?",
    "{name} read {a} pages in {b} days, the same number each day. How many pages per day?",
    "A farmer plants {a} trees in {b} equal rows. How many trees are in each row?",
    "Split {a} into {b} equal parts. How big is each part?",
    "{a} people ride in cars that hold {b} each, and every car is full. How many cars are used?",
    "{name} gives {a} cake slices equally to {b} guests. How many slices does each guest get?",
    "What number times {b} equals {a}?",
    "A trip of {a} miles takes {b} hours at a steady speed. How many miles is that per hour?",
    "A shelf holds {a} {item} in {b} equal stacks. How many {item} are in each stack?",
)

_DIV_EVAL = (
    "{name} divides {a} {item} into {b} equal groups. How many {item} are in each group?",
    "What is the quotient of {a} and {b}?",
    "A pizza with {a} slices is shared fairly by {b} kids. How many slices does each kid eat?",
    "{name} earned {a} dollars over {b} days, the same each day. How much per day?",
    "If {b} equal baskets hold {a} {item} in all, how many {item} are in one basket?",
    "There are {a} chairs set out in {b} equal rows. How many chairs are in each row?",
    "How many {b}s are there in {a}?",
    "A ribbon of {a} inches is cut into pieces of {b} inches. How many pieces are there?",
    "{b} friends share a prize of {a} dollars equally. How much does each friend get?",
    "A {a}-page book is read at {b} pages a day. How many days does it take to finish?",
)

TRAIN_TEMPLATES: dict[str, tuple[str, ...]] = {
    "+": _ADD_TRAIN,
    "-": _SUB_TRAIN,
    "*": _MUL_TRAIN,
    "/": _DIV_TRAIN,
}

EVAL_TEMPLATES: dict[str, tuple[str, ...]] = {
    "+": _ADD_EVAL,
    "-": _SUB_EVAL,
    "*": _MUL_EVAL,
    "/": _DIV_EVAL,
}

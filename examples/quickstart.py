"""The Python API on the built-in placeholder backend: one batch, then a whole dataset."""

from imagetask import ImageGeneration
from imagetask.models import PlaceholderImageGeneration

task = ImageGeneration(
    image_generation_model=PlaceholderImageGeneration(size="64x64"),
    num_generations=2,
)

for row in task.process_batch([{"prompt": "a red bicycle"}, {"prompt": "a blue kite"}]):
    print(row["prompt"], row["image"][:24] + "...", row["distilabel_metadata"])

rows = ({"prompt": f"a photo of object {i}"} for i in range(1000))
summary = task.run(rows, "quickstart-out")
print(summary)

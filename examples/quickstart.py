"""Generate image rows with a tiny in-code backend."""

import base64

from imagetask import ImageGeneration, ImageGenerationModel


class Tiny(ImageGenerationModel):
    """Returns the prompt's bytes as the 'image' (a stand-in for a real model)."""

    @property
    def model_name(self) -> str:
        return "tiny"

    def generate(self, inputs, num_generations=1, **kwargs):  # type: ignore[no-untyped-def]
        return [
            [
                {
                    "images": [
                        base64.b64encode(f"{p}#{k}".encode()).decode()
                        for k in range(num_generations)
                    ]
                }
            ]
            for p in inputs
        ]


task = ImageGeneration(image_generation_model=Tiny(), num_generations=2)
for row in task.process_batch([{"prompt": "a red bicycle"}, {"prompt": "a blue kite"}]):
    print(row)

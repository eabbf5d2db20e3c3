"""The built-in demo bot (``wa_agent.demo.DemoAgent``): it decides from what arrived, not
from words the interface added to the text."""

from __future__ import annotations

from wa_agent.demo import DemoAgent, make_png
from wa_agent.testing import Simulator, webhooks


async def test_a_failed_download_is_not_taken_for_a_picture_request() -> None:
    """When a photo cannot be downloaded (the interface adds a note mentioning the image to
    the text), the demo bot says the photo did not reach it; it does not answer "Here is a
    picture for you." as if the user had asked for one."""
    async with Simulator(DemoAgent(), mode="chat") as sim:
        user = sim.user("15551230201", "Ann")
        sim.emulator.fail_next(1, code=100, endpoint="media")  # the media URL lookup fails
        await user.send_image(make_png(8, 8), "image/png", caption="my cat")
        reply = await user.next_reply(10)
        assert reply.text is not None
        assert "Here is a picture" not in reply.text
        assert "Your image did not reach me" in reply.text
        assert user.take_replies() == []  # no picture sent either
        await sim.settle()
        # the same photo, downloaded this time, is described
        await user.send_image(make_png(8, 8), "image/png")
        reply = await user.next_reply(10)
        assert reply.text is not None and reply.text.startswith("Got your image: image/png")


async def test_asking_for_a_picture_still_gets_one() -> None:
    """A text asking for a picture gets the green square; a location or a shared contact
    is described, never taken for a request because of words in the rendered text."""
    async with Simulator(DemoAgent()) as sim:
        user = sim.user("15551230202")
        reply = await user.ask("send me a picture please")
        assert reply.text == "Here is a picture for you."
        image = await user.next_reply(10)
        assert image.type == "image" and image.mime_type == "image/png"
        await sim.settle()
        await user.send_location(52.52, 13.405, name="Photo studio")
        assert (await user.next_reply(10)).text == "You are at 52.5200, 13.4050 (Photo studio)."
        await user.share_contact("Image Maker", ["+15551230999"])
        assert (await user.next_reply(10)).text == "You shared 1 contact: Image Maker."
        await sim.settle()
        assert user.take_replies() == []


async def test_a_tapped_template_button_is_described() -> None:
    """A tap on a template's quick-reply button is described by its text."""
    async with Simulator(DemoAgent()) as sim:
        item = webhooks.text_message("15551230203", "x")
        item.pop("text")
        item.update(type="button", button={"payload": "PICTURE", "text": "Show a picture"})
        await sim.deliver(webhooks.envelope(messages=[item]))
        await sim.settle()
        assert sim.emulator.texts_to("15551230203") == ["You tapped: Show a picture."]

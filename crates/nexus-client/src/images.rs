//! Images (`/v1/images...`): list, inspect, import, build, delete; and the builds under
//! way: list, cancel.

use futures::Stream;
use nexus_api::{
    BuildImageRequest, ImageBuildEvent, ImageBuildList, ImageInfo, ImageList, ImportImageRequest,
};

use crate::{Client, ClientError, segment};

impl Client {
    /// `GET /v1/images`.
    pub async fn list_images(&self) -> Result<ImageList, ClientError> {
        self.get_json("/v1/images").await
    }

    /// `GET /v1/images/{image}`.
    pub async fn image(&self, image: &str) -> Result<ImageInfo, ClientError> {
        self.get_json(&format!("/v1/images/{}", segment(image)))
            .await
    }

    /// `POST /v1/images`: imports a directory of the daemon's host.
    pub async fn import_image(
        &self,
        request: &ImportImageRequest,
    ) -> Result<ImageInfo, ClientError> {
        self.call(self.http.post(self.url("/v1/images")).json(request))
            .await
    }

    /// `POST /v1/images/build`: the build's progress, ending with `done` or `failed`.
    /// A request the daemon refuses up front is an `Err` here, before any event.
    pub async fn build_image(
        &self,
        request: &BuildImageRequest,
    ) -> Result<impl Stream<Item = Result<ImageBuildEvent, ClientError>> + Unpin + use<>, ClientError>
    {
        self.ndjson(self.http.post(self.url("/v1/images/build")).json(request))
            .await
    }

    /// `GET /v1/images/builds`: the builds under way.
    pub async fn image_builds(&self) -> Result<ImageBuildList, ClientError> {
        self.get_json("/v1/images/builds").await
    }

    /// `DELETE /v1/images/builds/{name}`: cancels the build of image `name`. Returns once
    /// the daemon has stopped it (or, if that takes long, once it is stopping); its
    /// progress stream ends with `failed`, code `image_build_cancelled`.
    pub async fn cancel_image_build(&self, name: &str) -> Result<(), ClientError> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/images/builds/{}", segment(name)))),
        )
        .await
    }

    /// `DELETE /v1/images/{image}`.
    pub async fn delete_image(&self, image: &str) -> Result<(), ClientError> {
        self.call_empty(
            self.http
                .delete(self.url(&format!("/v1/images/{}", segment(image)))),
        )
        .await
    }
}
